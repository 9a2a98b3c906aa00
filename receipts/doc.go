// Package receipts owns Tollgate's verifiable receipts: the leaf format and
// its Poseidon2 hashing, the receipt JSON and its offline verification
// (Verify). The durable ledger is in receipts/ledger and the prover pipeline
// in receipts/prover; the batch circuit is in package zk. This package
// imports neither workers nor zk, so both may import it.
//
// Receipt leaf and batch statement (v1). All hashes are Poseidon2 over BN254
// Fr with gnark-crypto's default parameters (width 2, 6 full and 50 partial
// rounds): Compress(l, r) = P(l, r)[1] + r, and HashElements is the
// Merkle–Damgård chain of Compress from a zero state. SHA-256 digests enter
// the field as two 128-bit limbs; every input is canonical (< r).
//
//	request commitment = H(TagRequest, SHA256(request ID) limbs, request
//	                       digest limbs, response digest limbs,
//	                       SHA256(subject) limbs, time in Unix ns)
//	model version      = H(TagModelVersion, SHA256(name) limbs, weights digest limbs)
//	leaf               = Compress(request commitment, TagLeaf·2^64 + prompt·2^32 + completion)
//	batch root         = complete binary Merkle tree of Compress over the
//	                     capacity's leaves, padding leaves zero
//	batch message      = H(TagBatch, root, model version,
//	                       count·2^128 + total prompt·2^64 + total completion, sequence)
//	worker ID          = H(pubkey.X, pubkey.Y)   (see WorkerID)
//	registry root      = Merkle root (depth RegistryDepth) of model version commitments
//
// The leaf leaves out the model version: the circuit binds the whole root
// to one model version (a public input, in the signed batch message and
// proven to be in the registry), which ties every leaf to it for one hash
// per batch instead of one per leaf. With the tag and both token counts
// packed into one element (the circuit range-checks each count to 32 bits,
// so the packing is injective) a leaf costs one permutation. Measured: 485
// constraints per receipt at capacity 256 (600 at 64), against about 1,000
// for a leaf hashing five elements.
//
// Batch statement v2 (CircuitV2; zk/AUDIT.md has the audit). Leaves, the
// request commitment and the model version are as in v1. What changes:
//
//	admission leaf     = H(TagAdmission, worker ID, model version)
//	registry root      = Merkle root (depth RegistryDepthV2 = 16) of admission
//	                     leaves, zero padding (AdmissionRegistry)
//	batch message      = H(TagBatchV2, root, model version,
//	                       count·2^128 + total prompt·2^64 + total completion,
//	                       sequence, batch time in Unix ns)
//	public input       = PublicDigestV2: SHA-256 of PublicPreimageV2 (168 bytes),
//	                     top three bits cleared
//
// The circuit proves the admission leaf of H(worker key) and the model
// version is under the registry root, every point and scalar of the
// signature is constrained (R and the key of prime order, S < ℓ), and the
// digest is SHA-256 over the canonical encodings of the public values.
package receipts
