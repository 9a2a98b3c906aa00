package zk

import (
	"fmt"
	"sync"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/constraint"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"
)

var compiled sync.Map // capacity → *compileResult

type compileResult struct {
	once sync.Once
	cs   constraint.ConstraintSystem
	err  error
}

// Compile compiles the batch circuit of the given capacity to R1CS. Results
// are cached for the life of the process.
func Compile(capacity int) (constraint.ConstraintSystem, error) {
	v, _ := compiled.LoadOrStore(capacity, &compileResult{})
	res := v.(*compileResult)
	res.once.Do(func() {
		c, err := NewCircuit(capacity)
		if err != nil {
			res.err = err
			return
		}
		res.cs, res.err = frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, c)
		if res.err != nil {
			res.err = fmt.Errorf("compile batch circuit (capacity %d): %w", capacity, res.err)
		}
	})
	return res.cs, res.err
}
