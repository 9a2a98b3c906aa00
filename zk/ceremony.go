package zk

import (
	"errors"
	"fmt"
	"io"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/backend/groth16/bn254/mpcsetup"
	cs "github.com/consensys/gnark/constraint/bn254"
)

// The Groth16 MPC ceremony (gnark's mpcsetup) as steps on files, so each
// participant runs one step on their own machine:
//
//	phase 1 (circuit-independent powers of tau): Phase1Init, then each
//	participant Phase1Contribute; Phase1Seal verifies every contribution in
//	order and seals with a public random beacon into SRS commons.
//	phase 2 (this circuit): Phase2Init from the commons, each participant
//	Phase2Contribute; Finalize verifies every contribution and seals with a
//	beacon into the proving and verifying keys.
//
// Security holds if at least one participant of each phase destroyed their
// randomness (Contribute never writes it out).

// domainSize is the phase 1 size a capacity needs.
func domainSize(capacity int) (uint64, *cs.R1CS, error) {
	ccs, err := Compile(capacity)
	if err != nil {
		return 0, nil, err
	}
	r1cs, ok := ccs.(*cs.R1CS)
	if !ok {
		return 0, nil, errors.New("batch circuit did not compile to a BN254 R1CS")
	}
	return ecc.NextPowerOfTwo(uint64(r1cs.GetNbConstraints())), r1cs, nil
}

// Phase1Init writes the initial phase 1 state for a capacity.
func Phase1Init(w io.Writer, capacity int) error {
	n, _, err := domainSize(capacity)
	if err != nil {
		return err
	}
	return phase1Init(w, n)
}

func phase1Init(w io.Writer, n uint64) error {
	p := mpcsetup.NewPhase1(n)
	_, err := p.WriteTo(w)
	return err
}

// Phase1Contribute reads the latest phase 1 state, adds fresh randomness
// and writes the new state.
func Phase1Contribute(r io.Reader, w io.Writer) error {
	var p mpcsetup.Phase1
	if _, err := p.ReadFrom(r); err != nil {
		return fmt.Errorf("read phase 1 state: %w", err)
	}
	p.Contribute()
	_, err := p.WriteTo(w)
	return err
}

// Phase1Seal verifies the phase 1 contributions in order and writes the
// SRS commons sealed with the beacon.
func Phase1Seal(w io.Writer, capacity int, beacon []byte, contributions ...io.Reader) error {
	n, _, err := domainSize(capacity)
	if err != nil {
		return err
	}
	return phase1Seal(w, n, beacon, contributions...)
}

func phase1Seal(w io.Writer, n uint64, beacon []byte, contributions ...io.Reader) error {
	ps := make([]*mpcsetup.Phase1, len(contributions))
	for i, r := range contributions {
		ps[i] = new(mpcsetup.Phase1)
		if _, err := ps[i].ReadFrom(r); err != nil {
			return fmt.Errorf("phase 1 contribution %d: %w", i+1, err)
		}
	}
	if len(ps) == 0 {
		return errors.New("phase 1 needs at least one contribution")
	}
	commons, err := mpcsetup.VerifyPhase1(n, beacon, ps...)
	if err != nil {
		return fmt.Errorf("phase 1 verification: %w", err)
	}
	_, err = commons.WriteTo(w)
	return err
}

func readCommons(r io.Reader) (*mpcsetup.SrsCommons, error) {
	var c mpcsetup.SrsCommons
	if _, err := c.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("read SRS commons: %w", err)
	}
	return &c, nil
}

// Phase2Init writes the initial phase 2 state for a capacity.
func Phase2Init(w io.Writer, capacity int, commons io.Reader) error {
	_, r1cs, err := domainSize(capacity)
	if err != nil {
		return err
	}
	return phase2Init(w, r1cs, commons)
}

func phase2Init(w io.Writer, r1cs *cs.R1CS, commons io.Reader) error {
	c, err := readCommons(commons)
	if err != nil {
		return err
	}
	var p mpcsetup.Phase2
	p.Initialize(r1cs, c)
	_, err = p.WriteTo(w)
	return err
}

// Phase2Contribute reads the latest phase 2 state, adds fresh randomness
// and writes the new state.
func Phase2Contribute(r io.Reader, w io.Writer) error {
	var p mpcsetup.Phase2
	if _, err := p.ReadFrom(r); err != nil {
		return fmt.Errorf("read phase 2 state: %w", err)
	}
	p.Contribute()
	_, err := p.WriteTo(w)
	return err
}

// Finalize verifies the phase 2 contributions in order and seals them
// with the beacon into the capacity's keys.
func Finalize(capacity int, commons io.Reader, beacon []byte, contributions ...io.Reader) (groth16.ProvingKey, groth16.VerifyingKey, error) {
	_, r1cs, err := domainSize(capacity)
	if err != nil {
		return nil, nil, err
	}
	return finalize(r1cs, commons, beacon, contributions...)
}

func finalize(r1cs *cs.R1CS, commons io.Reader, beacon []byte, contributions ...io.Reader) (groth16.ProvingKey, groth16.VerifyingKey, error) {
	c, err := readCommons(commons)
	if err != nil {
		return nil, nil, err
	}
	ps := make([]*mpcsetup.Phase2, len(contributions))
	for i, r := range contributions {
		ps[i] = new(mpcsetup.Phase2)
		if _, err := ps[i].ReadFrom(r); err != nil {
			return nil, nil, fmt.Errorf("phase 2 contribution %d: %w", i+1, err)
		}
	}
	if len(ps) == 0 {
		return nil, nil, errors.New("phase 2 needs at least one contribution")
	}
	pk, vk, err := mpcsetup.VerifyPhase2(r1cs, c, beacon, ps...)
	if err != nil {
		return nil, nil, fmt.Errorf("phase 2 verification: %w", err)
	}
	return pk, vk, nil
}
