package zk

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"

	"github.com/tollgate-ai/tollgate/receipts"
)

// inputsCircuit is a stand-in with n public inputs: the verifier's text and
// gas depend only on how many there are, not on the circuit behind them.
type inputsCircuit struct {
	X []frontend.Variable `gnark:",public"`
	Y frontend.Variable
}

func (c *inputsCircuit) Define(api frontend.API) error {
	for i := range c.X {
		api.AssertIsEqual(c.X[i], api.Mul(c.Y, i+1))
	}
	return nil
}

func standInKey(t *testing.T, n int) groth16.VerifyingKey {
	t.Helper()
	cs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, &inputsCircuit{X: make([]frontend.Variable, n)})
	if err != nil {
		t.Fatal(err)
	}
	_, vk, err := groth16.Setup(cs)
	if err != nil {
		t.Fatal(err)
	}
	return vk
}

func TestExportVerifierHardened(t *testing.T) {
	for _, n := range []int{1, 8} {
		vk := standInKey(t, n)
		var raw, hard bytes.Buffer
		if err := vk.ExportSolidity(&raw); err != nil {
			t.Fatal(err)
		}
		if err := ExportVerifier(&hard, vk); err != nil {
			t.Fatalf("%d inputs: %v", n, err)
		}
		src := hard.String()
		// gnark's own export forwards all gas to every precompile.
		if c := strings.Count(raw.String(), "staticcall(gas(),"); c != 2*n+3 {
			t.Errorf("%d inputs: gnark's export has %d gas() calls, want %d", n, c, 2*n+3)
		}
		for _, want := range []string{
			"checkProofPoints(proof);",
			"staticcall(GAS_PAIRING, PRECOMPILE_VERIFY, f, 0x300,",
			"uint256 constant GAS_PAIRING = 181000;",
			"function publicInputMSM(uint256[" + string(rune('0'+n)) + "] memory input)",
		} {
			if !strings.Contains(src, want) {
				t.Errorf("%d inputs: hardened verifier lacks %q", n, want)
			}
		}
		if strings.Contains(src, "gas()") {
			t.Errorf("%d inputs: a precompile call still forwards gas()", n)
		}
	}
}

func TestHardenVerifierNoticesTemplateChange(t *testing.T) {
	vk := standInKey(t, 1)
	var raw bytes.Buffer
	if err := vk.ExportSolidity(&raw); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(string) string{
		"length check moved": func(s string) string {
			return strings.Replace(s, `require(proof.length == 256, "invalid proof length");`, `require(proof.length == 256);`, -1)
		},
		"another gas() call": func(s string) string {
			return strings.Replace(s, "staticcall(gas(), PRECOMPILE_ADD,", "staticcall(gas(), PRECOMPILE_ADD ,", 1)
		},
		"input read from calldata elsewhere": func(s string) string {
			return strings.Replace(s, "x := mload(f)", "x := calldataload(input)", 1)
		},
	} {
		if _, err := hardenVerifier(edit(raw.String()), 1); !errors.Is(err, ErrSolidityTemplate) {
			t.Errorf("%s: err = %v, want ErrSolidityTemplate", name, err)
		}
	}
}

func TestExportBatchVerifier(t *testing.T) {
	one := standInKey(t, 1)
	tests := []struct {
		name string
		vk   *receipts.VerifyingKey
		ok   bool
	}{
		{"v2 key", &receipts.VerifyingKey{Header: receipts.KeyHeader{Circuit: receipts.CircuitV2, Capacity: 8, Ceremony: CeremonyDev}, ID: "vk_test", Key: one}, true},
		{"v1 key", &receipts.VerifyingKey{Header: receipts.KeyHeader{Circuit: receipts.CircuitV1, Capacity: 8}, ID: "vk_v1", Key: one}, false},
		{"v2 key with eight inputs", &receipts.VerifyingKey{Header: receipts.KeyHeader{Circuit: receipts.CircuitV2, Capacity: 8}, ID: "vk_8", Key: standInKey(t, 8)}, false},
		{"no key", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := ExportBatchVerifier(&out, tt.vk)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			src := out.String()
			if strings.Count(src, "SPDX-License-Identifier") != 1 {
				t.Error("want one SPDX line in the combined source")
			}
			for _, want := range []string{"contract Verifier", "contract TollgateBatchVerifier is Verifier", "vk_test",
				"uint256 constant SHA256_GAS = 132;", "function verifyBatch(BatchPublic calldata b, bytes calldata proof) external"} {
				if !strings.Contains(src, want) {
					t.Errorf("source lacks %q", want)
				}
			}
		})
	}
}
