package jsongrammar

import (
	"math"
	"strconv"
)

// Numbers are generated without an exponent: -?(0|[1-9][0-9]*)(\.[0-9]+)?
// with at most maxIntDigits digits for integers, maxNumInt integer and
// maxNumFrac fraction digits for numbers. Within those forms the bounds are
// enforced exactly: a number is accepted when strconv.ParseFloat of its
// text satisfies them, as a validator decoding it to float64 checks; a
// prefix is live when some completion in those forms is accepted, which
// numDist decides by constructing a witness and checking it.

// numText is a number being generated.
type numText struct {
	buf  [maxIntDigits + maxNumFrac + 3]byte
	n    uint8
	neg  bool
	intN uint8 // integer digits
	dot  bool
	frac uint8 // fraction digits
}

func (t *numText) text() string { return string(t.buf[:t.n]) }

// push appends a byte if the syntax allows it.
func (t *numText) push(nd *node, b byte) bool {
	switch {
	case b == '-':
		if t.n != 0 {
			return false
		}
		t.neg = true
	case b == '.':
		if nd.kind == kInteger || t.intN == 0 || t.dot {
			return false
		}
		t.dot = true
	case b >= '0' && b <= '9':
		if t.dot {
			if t.frac >= maxNumFrac {
				return false
			}
			t.frac++
		} else {
			if t.intN == 1 && t.buf[t.n-1] == '0' {
				return false // no leading zeros
			}
			if int(t.intN) >= intLimit(nd) {
				return false
			}
			t.intN++
		}
	default:
		return false
	}
	t.buf[t.n] = b
	t.n++
	return true
}

func intLimit(nd *node) int {
	if nd.kind == kInteger {
		return maxIntDigits
	}
	return maxNumInt
}

func fracLimit(nd *node) int {
	if nd.kind == kInteger {
		return 0
	}
	return maxNumFrac
}

// inBounds reports whether v satisfies n's bounds.
func (n *node) inBounds(v float64) bool {
	if n.loExcl {
		if !(v > n.lo) {
			return false
		}
	} else if !(v >= n.lo) {
		return false
	}
	if n.hiExcl {
		return v < n.hi
	}
	return v <= n.hi
}

func (n *node) unbounded() bool { return math.IsInf(n.lo, -1) && math.IsInf(n.hi, 1) }

// accepting reports whether t is a complete number within the bounds.
func (t *numText) accepting(nd *node) bool {
	if t.intN == 0 || (t.dot && t.frac == 0) {
		return false
	}
	if nd.unbounded() {
		return true
	}
	v, err := strconv.ParseFloat(t.text(), 64)
	return err == nil && nd.inBounds(v)
}

// numMin is the length of n's shortest number, or -1 if none exists.
func numMin(n *node) int {
	var t numText
	return numDist(n, &t)
}

// numDist is the fewest bytes that complete t to an accepted number, or -1.
func numDist(nd *node, t *numText) int {
	if t.accepting(nd) {
		return 0
	}
	if nd.unbounded() {
		d := 0
		if t.intN == 0 {
			d++
		}
		if t.dot && t.frac == 0 {
			d++
		}
		return d
	}
	best := -1
	try := func(neg bool, extraSign int) {
		if d := familyDist(nd, t, neg); d >= 0 && (best < 0 || d+extraSign < best) {
			best = d + extraSign
		}
	}
	if t.n == 0 {
		try(false, 0)
		try(true, 1)
	} else {
		try(t.neg, 0)
	}
	return best
}

// familyDist is the fewest bytes completing t (whose sign is neg) with a
// more integer digits and c fraction digits to a number within the bounds.
func familyDist(nd *node, t *numText, neg bool) int {
	// Digits already written, as an integer.
	var p uint64
	for _, b := range t.buf[:t.n] {
		if b >= '0' && b <= '9' {
			p = p*10 + uint64(b-'0')
		}
	}
	maxA := intLimit(nd) - int(t.intN)
	if t.dot || (t.intN == 1 && t.buf[t.n-1] == '0') {
		maxA = 0
	}
	best := -1
	for a := 0; a <= maxA; a++ {
		if int(t.intN)+a == 0 {
			continue
		}
		for c := 0; c <= fracLimit(nd)-int(t.frac); c++ {
			dotNeeded := !t.dot && c > 0
			if t.dot && t.frac == 0 && c == 0 {
				continue
			}
			k := a + c
			if dotNeeded {
				k++
			}
			if best >= 0 && k >= best {
				continue
			}
			if witness(nd, t, neg, p, a, c, dotNeeded) {
				best = k
			}
		}
	}
	return best
}

var pow10 = func() (t [20]uint64) {
	t[0] = 1
	for i := 1; i < len(t); i++ {
		t[i] = t[i-1] * 10
	}
	return t
}()

// witness reports whether some number of the family (t's digits then a
// integer digits, then c fraction digits) lies within the bounds: it takes
// the family's smallest magnitude at or above the lower bound on
// magnitudes and checks it, and a few next ones, by parsing their text.
func witness(nd *node, t *numText, neg bool, p uint64, a, c int, dotNeeded bool) bool {
	fracTotal := int(t.frac) + c
	scale := pow10[a+c]
	low, high := p*scale, p*scale+scale-1
	if t.intN == 0 && a >= 2 {
		low = pow10[a-1+c] // no leading zero
	}
	// Bounds on the magnitude m: value is m or -m, scaled by 10^fracTotal.
	mlo, mhi := nd.lo, nd.hi
	if neg {
		mlo, mhi = -nd.hi, -nd.lo
	}
	div := float64(pow10[fracTotal])
	start := low
	if x := math.Floor(mlo * div); x > float64(low) {
		if x > float64(high) {
			return false
		}
		start = uint64(x)
	}
	if x := mhi * div; x < float64(low)-1 {
		return false
	}
	for i := uint64(0); i < 4 && start+i <= high; i++ {
		m := start + i
		s := formatScaled(neg, m, fracTotal)
		v, err := strconv.ParseFloat(s, 64)
		if err == nil && nd.inBounds(v) {
			return true
		}
	}
	return false
}

func formatScaled(neg bool, m uint64, frac int) string {
	digits := strconv.FormatUint(m, 10)
	for len(digits) <= frac {
		digits = "0" + digits
	}
	s := digits
	if frac > 0 {
		s = digits[:len(digits)-frac] + "." + digits[len(digits)-frac:]
	}
	if neg {
		s = "-" + s
	}
	return s
}
