package zk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/template"

	"github.com/consensys/gnark/backend/groth16"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"github.com/consensys/gnark/backend/solidity"

	"github.com/tollgate-ai/tollgate/receipts"
)

// Solidity export.
//
// ExportVerifier writes gnark's Groth16 verifier (vk.ExportSolidity, gnark
// v0.16's template) hardened in four ways, each a textual edit of the
// template that must match exactly (hardenVerifier fails otherwise, so a
// new gnark template is noticed at export, not on chain):
//
//   - verifyProof first checks the proof's points (checkProofPoints): every
//     coordinate below p, A and C on y² = x³ + 3 (G1 has cofactor 1, so this
//     puts them in the group), B on the twist y² = x³ + 3/(9+i). A malformed
//     proof is refused with ProofMalformed for about a thousand gas instead
//     of reaching the pairing precompile, which on invalid input consumes all
//     the gas it was given (gnark forwards gas(): ~9.8 M for a flipped byte
//     in a 10 M transaction).
//   - no precompile call forwards gas(): each gets its price (EIP-1108:
//     ecAdd 150, ecMul 6,000, a four-pair pairing 181,000) or, for modexp
//     (used only by the compressed-proof helpers), a cap above its price.
//     The one failure the point checks cannot see, a B on the twist but
//     outside G2, now costs at most the pairing's price. On a chain that
//     prices these precompiles higher the calls fail (the proof is refused,
//     never accepted): regenerate with other constants there.
//   - verifyProof and the public-input MSM take the inputs from memory, so
//     TollgateBatchVerifier can pass the digest it computes without an
//     external call. verifyProof stays public and ABI-compatible.
//   - only keys without Pedersen commitments are exported (the v2 circuit
//     uses none; gnark's commitment path is not hardened here).
//
// ExportBatchVerifier writes one Solidity source with that verifier and
// TollgateBatchVerifier (below), the contract a billing system deploys for a
// v2 verifying key.

// Precompile gas, as written into the hardened verifier.
const (
	gasECAdd   = 150
	gasECMul   = 6000
	gasModexp  = 10000 // a cap: 32-byte operands cost 1,349 under EIP-2565, at most 4,080 under EIP-7883
	gasPairing = 45000 + 4*34000
	gasSHA256  = 60 + 12*((receipts.PublicBytesV2+31)/32) // the 168-byte preimage
)

// ErrSolidityTemplate is returned when gnark's Solidity template no longer
// has the text the hardening edits; the export is refused rather than
// written unhardened.
var ErrSolidityTemplate = errors.New("gnark's Solidity template changed: hardening does not apply")

const pointChecks = `
    /// A proof point is not a valid encoding: a coordinate not below P, A or C
    /// not on the curve, or B not on the twist.
    error ProofMalformed();

    // Gas forwarded to each precompile call (hardened export): its price
    // since EIP-1108, or a cap above it for modexp. A failing precompile call
    // consumes all the gas it is given, so none is given all that is left.
    uint256 constant GAS_ECADD = {{.ECAdd}};
    uint256 constant GAS_ECMUL = {{.ECMul}};
    uint256 constant GAS_MODEXP = {{.Modexp}};
    uint256 constant GAS_PAIRING = {{.Pairing}}; // 45,000 + 4 × 34,000

    /// Refuses a proof whose points are not valid encodings, before any
    /// precompile sees them. A and C must satisfy y² = x³ + 3 (G1 has
    /// cofactor 1, so they are in the group; the point at infinity, which an
    /// honest proof never holds, is refused), B must satisfy y² = x³ + b' over
    /// Fp2 with b' = 3/(9 + i) = 27/82 - (3/82)·i. Whether B is in the order-r
    /// subgroup is left to the pairing precompile, which refuses it within
    /// GAS_PAIRING.
    /// @param proof A | B (x1, x0, y1, y0) | C, as in verifyProof.
    function checkProofPoints(bytes calldata proof) internal pure {
        uint256 x;
        uint256 y;
        assembly ("memory-safe") {
            x := calldataload(proof.offset)
            y := calldataload(add(proof.offset, 0x20))
        }
        checkG1(x, y);
        assembly ("memory-safe") {
            x := calldataload(add(proof.offset, 0xc0))
            y := calldataload(add(proof.offset, 0xe0))
        }
        checkG1(x, y);
        uint256 x0;
        uint256 x1;
        uint256 y0;
        uint256 y1;
        assembly ("memory-safe") {
            x1 := calldataload(add(proof.offset, 0x40))
            x0 := calldataload(add(proof.offset, 0x60))
            y1 := calldataload(add(proof.offset, 0x80))
            y0 := calldataload(add(proof.offset, 0xa0))
        }
        checkG2(x0, x1, y0, y1);
    }

    function checkG1(uint256 x, uint256 y) internal pure {
        if (x >= P || y >= P || mulmod(y, y, P) != addmod(mulmod(mulmod(x, x, P), x, P), 3, P)) {
            revert ProofMalformed();
        }
    }

    function checkG2(uint256 x0, uint256 x1, uint256 y0, uint256 y1) internal pure {
        if (x0 >= P || x1 >= P || y0 >= P || y1 >= P) {
            revert ProofMalformed();
        }
        // x² = a + b·i
        uint256 a = addmod(mulmod(x0, x0, P), P - mulmod(x1, x1, P), P);
        uint256 b = mulmod(2, mulmod(x0, x1, P), P);
        // x³ + b' = (a·x0 - b·x1 + 27/82) + (a·x1 + b·x0 - 3/82)·i
        uint256 r0 = addmod(addmod(mulmod(a, x0, P), P - mulmod(b, x1, P), P), FRACTION_27_82_FP, P);
        uint256 r1 = addmod(addmod(mulmod(a, x1, P), mulmod(b, x0, P), P), P - FRACTION_3_82_FP, P);
        // y² = (y0² - y1²) + 2·y0·y1·i
        if (addmod(mulmod(y0, y0, P), P - mulmod(y1, y1, P), P) != r0 || mulmod(2, mulmod(y0, y1, P), P) != r1) {
            revert ProofMalformed();
        }
    }`

// ExportVerifier writes the hardened gnark verifier (see the package's
// Solidity notes above) for a verifying key without commitments.
func ExportVerifier(w io.Writer, vk groth16.VerifyingKey) error {
	src, err := hardenedVerifier(vk)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, src)
	return err
}

func hardenedVerifier(vk groth16.VerifyingKey) (string, error) {
	bvk, ok := vk.(*groth16bn254.VerifyingKey)
	if !ok {
		return "", fmt.Errorf("solidity export: want a BN254 verifying key, got %T", vk)
	}
	if len(bvk.PublicAndCommitmentCommitted) > 0 || len(bvk.CommitmentKeys) > 0 {
		return "", errors.New("solidity export: keys with Pedersen commitments are not supported")
	}
	var checks bytes.Buffer
	if err := template.Must(template.New("checks").Parse(pointChecks)).Execute(&checks, map[string]int{
		"ECAdd": gasECAdd, "ECMul": gasECMul, "Modexp": gasModexp, "Pairing": gasPairing,
	}); err != nil {
		return "", err
	}
	var raw bytes.Buffer
	if err := vk.ExportSolidity(&raw, solidity.WithFunctions(&checks)); err != nil {
		return "", fmt.Errorf("solidity export: %w", err)
	}
	return hardenVerifier(raw.String(), vk.NbPublicWitness())
}

// hardenVerifier applies the textual edits to gnark's exported verifier for
// n public inputs; each must match the expected number of times.
func hardenVerifier(src string, n int) (string, error) {
	input := fmt.Sprintf("uint256[%d] calldata input", n)
	memInput := fmt.Sprintf("uint256[%d] memory input", n)
	const lengthCheck = `require(proof.length == 256, "invalid proof length");`
	edits := []struct {
		old, new string
		count    int
	}{
		{"staticcall(gas(), PRECOMPILE_MODEXP,", "staticcall(GAS_MODEXP, PRECOMPILE_MODEXP,", 1},
		{"staticcall(gas(), PRECOMPILE_MUL,", "staticcall(GAS_ECMUL, PRECOMPILE_MUL,", n},
		{"staticcall(gas(), PRECOMPILE_ADD,", "staticcall(GAS_ECADD, PRECOMPILE_ADD,", n},
		{"staticcall(gas(), PRECOMPILE_VERIFY, pairings, 0x300,", "staticcall(GAS_PAIRING, PRECOMPILE_VERIFY, pairings, 0x300,", 1},
		{"staticcall(gas(), PRECOMPILE_VERIFY, f, 0x300,", "staticcall(GAS_PAIRING, PRECOMPILE_VERIFY, f, 0x300,", 1},
		{"function publicInputMSM(" + input + ")", "function publicInputMSM(" + memInput + ")", 1},
		{"s :=  calldataload(input)", "s := mload(input)", 1},
		{"s :=  calldataload(add(input, ", "s := mload(add(input, ", n - 1},
		{"bytes calldata proof,\n        " + input + "\n    ) public view {\n        " + lengthCheck,
			"bytes calldata proof,\n        " + memInput + "\n    ) public view {\n        " + lengthCheck + "\n        checkProofPoints(proof);", 1},
	}
	for _, e := range edits {
		if got := strings.Count(src, e.old); got != e.count {
			return "", fmt.Errorf("%w: %q found %d times, want %d", ErrSolidityTemplate, e.old, got, e.count)
		}
		src = strings.ReplaceAll(src, e.old, e.new)
	}
	if strings.Contains(src, "gas()") || strings.Contains(src, "calldataload(input") || strings.Contains(src, "calldataload(add(input") {
		return "", fmt.Errorf("%w: a precompile call or calldata input is left", ErrSolidityTemplate)
	}
	return src, nil
}

// ExportKeySolidity writes the Solidity a verifying key's receipts are
// verified with on chain: ExportBatchVerifier for a v2 key, the hardened
// verifier alone (ExportVerifier) for any other.
func ExportKeySolidity(w io.Writer, vk *receipts.VerifyingKey) error {
	if vk == nil {
		return errors.New("no verifying key")
	}
	if vk.Header.Circuit == receipts.CircuitV2 {
		return ExportBatchVerifier(w, vk)
	}
	return ExportVerifier(w, vk.Key)
}

// ExportBatchVerifier writes, for a v2 verifying key, one Solidity source
// holding the hardened verifier and TollgateBatchVerifier, which checks a
// batch's public values against the operator's registry roots and its proof
// against the verifier (see batchVerifierSource for the contract).
func ExportBatchVerifier(w io.Writer, vk *receipts.VerifyingKey) error {
	if vk == nil {
		return errors.New("no verifying key")
	}
	if vk.Header.Circuit != receipts.CircuitV2 {
		return fmt.Errorf("solidity export: TollgateBatchVerifier is for circuit %s, key is for %s", receipts.CircuitV2, vk.Header.Circuit)
	}
	if n := vk.Key.NbPublicWitness(); n != 1 {
		return fmt.Errorf("solidity export: circuit %s key has %d public inputs, want 1", vk.Header.Circuit, n)
	}
	verifier, err := hardenedVerifier(vk.Key)
	if err != nil {
		return err
	}
	var wrapper bytes.Buffer
	if err := batchVerifierTemplate.Execute(&wrapper, map[string]any{
		"Circuit": vk.Header.Circuit, "Capacity": vk.Header.Capacity, "KeyID": vk.ID, "Ceremony": vk.Header.Ceremony,
		"SHA256Gas": gasSHA256, "PreimageBytes": receipts.PublicBytesV2,
	}); err != nil {
		return err
	}
	if _, err := io.WriteString(w, verifier); err != nil {
		return err
	}
	_, err = io.WriteString(w, wrapper.String())
	return err
}

var batchVerifierTemplate = template.Must(template.New("wrapper").Parse(batchVerifierSource))

// batchVerifierSource is TollgateBatchVerifier. It follows the verifier in
// the same source (one SPDX line, so none here).
const batchVerifierSource = `
/// @title Tollgate batch receipt verifier
/// @notice For circuit {{.Circuit}}, capacity {{.Capacity}}, verifying key {{.KeyID}} ({{.Ceremony}} set-up).
/// A batch verifies when its public values are canonical, its registry root
/// is the one the owner posted as in force at the batch's time, and the
/// Groth16 proof verifies for the one public input the circuit has:
/// sha256 of the {{.PreimageBytes}}-byte packed values with the top three bits cleared
/// (receipts.PublicDigestV2 in Tollgate).
/// @dev verifyBatch emits BatchVerified and reverts on any failure; checkBatch
/// is the same check as a view (for eth_call, or a contract that gates on
/// it). Both revert rather than return false, so the reason is kept and a
/// caller cannot forget to test a result. Neither records the batch: a
/// consumer that pays per batch must itself refuse a (workerId, sequence) it
/// has seen.
contract TollgateBatchVerifier is Verifier {
    /// A batch's public values, as in a receipt's batch.public. Field
    /// elements must be canonical (below R); times are Unix nanoseconds.
    struct BatchPublic {
        uint256 root;
        uint256 modelVersion;
        uint256 registryRoot;
        uint256 workerId;
        uint64 leafCount;
        uint64 totalPrompt;
        uint64 totalCompletion;
        uint64 sequence;
        uint64 batchTime;
    }

    /// A batch verified: the values its proof commits to.
    event BatchVerified(
        uint256 indexed workerId,
        uint256 indexed root,
        uint256 modelVersion,
        uint256 registryRoot,
        uint64 leafCount,
        uint64 totalPrompt,
        uint64 totalCompletion,
        uint64 sequence,
        uint64 batchTime
    );
    /// The owner posted a registry root, in force from validFrom until the
    /// next root's validFrom.
    event RegistryRootPosted(uint256 indexed index, uint256 root, uint64 validFrom);
    event OwnerChanged(address owner);

    error NotOwner();
    error ValidFromNotIncreasing();
    /// The batch's registry root was not the root in force at its time:
    /// never posted (a key the operator never admitted), or replaced by a
    /// later root before the batch's time (a revoked pair), or the batch is
    /// older than the first root.
    error RegistryRootNotInForce();
    /// A time (a root's validFrom or a batch time) after MAX_TIME.
    error TimeOutOfRange();

    uint256 constant SHA256_GAS = {{.SHA256Gas}}; // 60 + 12 per word of the preimage
    uint256 constant OPEN = type(uint64).max; // validUntil of the latest root
    // Times are Unix ns up to 2262-04-11 (int64), as Tollgate encodes them
    // (receipts.UnixNanos): a batch time beyond has no receipt off chain,
    // and no validFrom can reach OPEN, so OPEN only ever marks the latest root.
    uint64 constant MAX_TIME = uint64(type(int64).max);
    uint256 constant DIGEST_MASK = (1 << 253) - 1;

    address public owner;
    uint64 public registryRootCount;
    // A posting is packed as validFrom | validUntil << 64 | prev << 128,
    // prev being index + 1 of the same root's previous posting (0: none).
    // postings: index => posting. latest: root => its latest posting |
    // (index + 1) << 192, so that a batch under the root in force costs one
    // storage read. postedRoot: index => root.
    mapping(uint256 => uint256) private postings;
    mapping(uint256 => uint256) private latest;
    mapping(uint256 => uint256) private postedRoot;

    constructor(address owner_) {
        owner = owner_;
        emit OwnerChanged(owner_);
    }

    function transferOwnership(address owner_) external {
        if (msg.sender != owner) revert NotOwner();
        owner = owner_;
        emit OwnerChanged(owner_);
    }

    /// Appends a registry root to the history: it is in force from
    /// validFrom (Unix ns, later than the previous root's, at most MAX_TIME)
    /// until the next root's validFrom. Revoking a pair is posting a root
    /// without it.
    function postRegistryRoot(uint256 root, uint64 validFrom) external {
        if (msg.sender != owner) revert NotOwner();
        if (root >= R) revert PublicInputNotInField();
        if (validFrom > MAX_TIME) revert TimeOutOfRange();
        uint256 n = registryRootCount;
        if (n > 0) {
            // The previous posting ends where this one starts.
            uint256 prev = postings[n - 1];
            if (validFrom <= uint64(prev)) revert ValidFromNotIncreasing();
            uint256 ended = (prev & ~(OPEN << 64)) | (uint256(validFrom) << 64);
            postings[n - 1] = ended;
            latest[postedRoot[n - 1]] = ended | (n << 192);
        }
        uint256 posting = uint256(validFrom) | (OPEN << 64) | ((latest[root] >> 192) << 128);
        postings[n] = posting;
        latest[root] = posting | ((n + 1) << 192);
        postedRoot[n] = root;
        registryRootCount = uint64(n + 1);
        emit RegistryRootPosted(n, root, validFrom);
    }

    /// The index-th posted registry root and when it was in force
    /// (validUntil is type(uint64).max for the latest).
    function registryRoot(uint256 index) external view returns (uint256 root, uint64 validFrom, uint64 validUntil) {
        require(index < registryRootCount, "no such registry root");
        uint256 p = postings[index];
        return (postedRoot[index], uint64(p), uint64(p >> 64));
    }

    /// Reverts with RegistryRootNotInForce unless root was the root in force
    /// at time t: from the root's latest posting back to the first that
    /// started at or before t (no step back unless the root was posted
    /// again after t).
    function requireRootInForce(uint256 root, uint64 t) internal view {
        uint256 p = latest[root];
        if (p == 0) revert RegistryRootNotInForce(); // never posted
        while (uint64(p) > t) {
            uint256 prev = uint64(p >> 128);
            if (prev == 0) revert RegistryRootNotInForce();
            p = postings[prev - 1];
        }
        uint256 until = uint64(p >> 64);
        if (t >= until && until != OPEN) revert RegistryRootNotInForce();
    }

    /// The circuit's one public input for b: sha256 over root, modelVersion,
    /// registryRoot, workerId (32 bytes each) and leafCount, totalPrompt,
    /// totalCompletion, sequence, batchTime (8 bytes each), big-endian, top
    /// three bits cleared.
    function publicDigest(BatchPublic calldata b) public view returns (uint256 digest) {
        bytes memory pre = abi.encodePacked(
            b.root, b.modelVersion, b.registryRoot, b.workerId,
            b.leafCount, b.totalPrompt, b.totalCompletion, b.sequence, b.batchTime
        );
        bool ok;
        assembly ("memory-safe") {
            ok := staticcall(SHA256_GAS, 0x02, add(pre, 0x20), mload(pre), 0x00, 0x20)
            digest := mload(0x00)
        }
        require(ok, "sha256 failed");
        digest &= DIGEST_MASK;
    }

    /// Reverts unless b and proof form a valid batch (see the contract's notes).
    /// @param proof the Groth16 proof as 256 bytes (gnark's MarshalSolidity).
    function checkBatch(BatchPublic calldata b, bytes calldata proof) public view {
        if (b.root >= R || b.modelVersion >= R || b.registryRoot >= R || b.workerId >= R) {
            revert PublicInputNotInField();
        }
        if (b.batchTime > MAX_TIME) revert TimeOutOfRange();
        requireRootInForce(b.registryRoot, b.batchTime);
        verifyProof(proof, [publicDigest(b)]);
    }

    /// checkBatch, then BatchVerified.
    function verifyBatch(BatchPublic calldata b, bytes calldata proof) external {
        checkBatch(b, proof);
        emit BatchVerified(
            b.workerId, b.root, b.modelVersion, b.registryRoot,
            b.leafCount, b.totalPrompt, b.totalCompletion, b.sequence, b.batchTime
        );
    }
}
`
