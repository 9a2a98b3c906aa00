package jsongrammar

// fkind is what a frame of the pushdown stack is reading.
type fkind uint8

const (
	fRoot   fkind = iota // the document's value is complete
	fValue               // a value of n may start (whitespace first)
	fLit                 // one literal: an enum value or an object key
	fString              // a string of n
	fNumber              // a number of n
	fObject              // inside an object of n
	fArray               // inside an array of n
)

// Object and array phases.
const (
	phStart    uint8 = iota // after { or [
	phAfterVal              // after a member or an item
	phAfterCom              // after a comma
	phAfterKey              // object: after a key, before the colon
)

// frame is one level of the stack. Frames are values: feeding a byte
// changes the top frame in a copy, and only a push allocates.
type frame struct {
	n     *node
	kind  fkind
	phase uint8
	ws    uint8 // whitespace bytes in a row
	// fObject: next prop index, whether a member was written; fArray: items.
	idx     int32
	emitted bool
	// fString: characters so far; pending escape or UTF-8 bytes.
	count  int32
	esc    uint8  // 0 none, 1 after '\', 2..5 hex digits of \u read + 2
	hex    uint16 // \u value so far
	u8need uint8  // continuation bytes still expected
	u8lo   byte   // range of the next continuation byte
	u8hi   byte
	key    bool // fString: an object key (of a free object)
	// fLit
	lit []byte
	pos int32
	// fNumber
	num numText
}

// link is a frame below the top, shared by every state that holds it.
type link struct {
	f     frame
	next  *link
	cum   int // bytes to finish this frame and all below, once the one above is done
	depth int
}

// path is one reading of the input: the top frame and the stack below.
type path struct {
	top   frame
	below *link
}

// maxPaths bounds the readings a state keeps (alternatives of anyOf,
// candidate keys and enum values); extra ones are dropped, which only
// narrows what may be generated.
const maxPaths = 64

// State is a recogniser state: the readings of the bytes fed so far. The
// zero State is dead. A State may be copied; Feed never changes the
// receiver.
type State struct {
	paths []path
}

// Start is the state before any byte.
func (g *Grammar) Start() State {
	root := &link{f: frame{kind: fRoot}}
	return State{paths: []path{{top: frame{kind: fValue, n: g.root}, below: root}}}
}

// Alive reports whether some continuation can still be accepted.
func (s State) Alive() bool { return len(s.paths) > 0 }

// Complete reports whether the bytes fed so far are a whole document the
// grammar accepts (the generation may end here).
func (s State) Complete() bool {
	for i := range s.paths {
		p := &s.paths[i]
		switch {
		case p.top.kind == fRoot:
			return true
		case p.top.kind == fNumber && p.below.f.kind == fRoot && p.top.num.accepting(p.top.n):
			return true
		}
	}
	return false
}

// Done reports whether the document is complete and nothing may follow it:
// its value is closed (an object, array, string or literal). A number at the
// top level is Complete but never Done, since more digits may follow.
func (s State) Done() bool {
	for i := range s.paths {
		if s.paths[i].top.kind == fRoot {
			return true
		}
	}
	return false
}

// Dist is the fewest bytes that complete the document, or -1 when dead.
func (s State) Dist() int {
	best := -1
	for i := range s.paths {
		if d := s.paths[i].dist(); d >= 0 && (best < 0 || d < best) {
			best = d
		}
	}
	return best
}

// Feed returns the state after data, and whether it is alive.
func (s State) Feed(data []byte) (State, bool) {
	cur := State{paths: append([]path(nil), s.paths...)}
	var next State
	for _, b := range data {
		if !cur.StepInto(&next, b) {
			return State{}, false
		}
		cur, next = next, cur
	}
	return cur, true
}

// StepInto writes the state after byte b into dst (reusing its memory) and
// reports whether it is alive. s and dst must not share memory.
func (s *State) StepInto(dst *State, b byte) bool {
	out := dst.paths[:0]
	for _, p := range s.paths {
		out = step(p, b, out)
		if len(out) > maxPaths {
			out = out[:maxPaths]
		}
	}
	dst.paths = out
	return len(out) > 0
}

func isWS(b byte) bool { return b == ' ' || b == '\n' || b == '\t' || b == '\r' }

// push makes f the top with the old top below it, unless too deep.
func push(p path, f frame) (path, bool) {
	depth := p.below.depth + 1
	if depth > MaxValueDepth+1 {
		return p, false
	}
	l := &link{f: p.top, next: p.below, depth: depth}
	l.cum = frameDist(&l.f) + p.below.cum
	return path{top: f, below: l}, true
}

// pop makes the frame below the top.
func pop(p path) path { return path{top: p.below.f, below: p.below.next} }

// pushValue expects a value of n above p's top (already in its after-value
// phase).
func pushValue(p path, n *node, out []path) []path {
	q, ok := push(p, frame{kind: fValue, n: n})
	if !ok {
		return out
	}
	return append(out, q)
}

// step feeds one byte to one path, appending the surviving readings.
func step(p path, b byte, out []path) []path {
	t := &p.top
	switch t.kind {
	case fRoot:
		return out
	case fValue:
		if isWS(b) {
			if t.ws >= maxWhitespace {
				return out
			}
			t.ws++
			return append(out, p)
		}
		for _, n := range t.n.flat {
			out = begin(p, n, b, out)
		}
		return out
	case fLit:
		if t.lit[t.pos] != b {
			return out
		}
		t.pos++
		if int(t.pos) == len(t.lit) {
			p = pop(p)
		}
		return append(out, p)
	case fString:
		return stepString(p, b, out)
	case fNumber:
		save := t.num
		if t.num.push(t.n, b) {
			if numDist(t.n, &t.num) >= 0 {
				return append(out, p)
			}
			return out
		}
		t.num = save
		if !t.num.accepting(t.n) {
			return out
		}
		return step(pop(p), b, out)
	case fObject:
		return stepObject(p, b, out)
	case fArray:
		return stepArray(p, b, out)
	}
	return out
}

// begin starts a value of the non-union n with its first byte b.
func begin(p path, n *node, b byte, out []path) []path {
	switch n.kind {
	case kEnum:
		for _, lit := range n.lits {
			if lit[0] != b {
				continue
			}
			q := p
			if len(lit) == 1 {
				q = pop(q)
			} else {
				q.top = frame{kind: fLit, lit: lit, pos: 1}
			}
			out = append(out, q)
		}
	case kString:
		if b == '"' {
			p.top = frame{kind: fString, n: n}
			out = append(out, p)
		}
	case kNumber, kInteger:
		f := frame{kind: fNumber, n: n}
		if f.num.push(n, b) && numDist(n, &f.num) >= 0 {
			p.top = f
			out = append(out, p)
		}
	case kObject:
		if b == '{' {
			p.top = frame{kind: fObject, n: n}
			out = append(out, p)
		}
	case kArray:
		if b == '[' {
			p.top = frame{kind: fArray, n: n}
			out = append(out, p)
		}
	}
	return out
}

func stepString(p path, b byte, out []path) []path {
	t := &p.top
	n := t.n
	switch {
	case t.u8need > 0:
		if b < t.u8lo || b > t.u8hi {
			return out
		}
		t.u8need--
		t.u8lo, t.u8hi = 0x80, 0xBF
		return append(out, p)
	case t.esc == 1:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			t.esc = 0
		case 'u':
			t.esc, t.hex = 2, 0
		default:
			return out
		}
		return append(out, p)
	case t.esc >= 2:
		v, ok := hexVal(b)
		if !ok {
			return out
		}
		t.hex = t.hex<<4 | uint16(v)
		t.esc++
		if t.esc == 4 && t.hex >= 0xD8 && t.hex <= 0xDF {
			return out // no surrogates (decided at \uD8..): every \u escape is one character
		}
		if t.esc == 6 {
			t.esc = 0
		}
		return append(out, p)
	case b == '"':
		if int(t.count) < n.minLen {
			return out
		}
		return append(out, pop(p))
	case b < 0x20:
		return out
	}
	// A new character starts.
	if n.maxLen >= 0 && int(t.count) >= n.maxLen {
		return out
	}
	t.count++
	switch {
	case b == '\\':
		t.esc = 1
	case b < 0x80:
	case b >= 0xC2 && b <= 0xDF:
		t.u8need, t.u8lo, t.u8hi = 1, 0x80, 0xBF
	case b >= 0xE0 && b <= 0xEF:
		t.u8need, t.u8lo, t.u8hi = 2, 0x80, 0xBF
		if b == 0xE0 {
			t.u8lo = 0xA0
		} else if b == 0xED {
			t.u8hi = 0x9F
		}
	case b >= 0xF0 && b <= 0xF4:
		t.u8need, t.u8lo, t.u8hi = 3, 0x80, 0xBF
		if b == 0xF0 {
			t.u8lo = 0x90
		} else if b == 0xF4 {
			t.u8hi = 0x8F
		}
	default:
		return out
	}
	return append(out, p)
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// anyString is the schema of a free object's keys.
var anyString = &node{kind: kString, maxLen: -1, min: 2}

func stepObject(p path, b byte, out []path) []path {
	t := &p.top
	n := t.n
	if isWS(b) {
		if t.ws >= maxWhitespace {
			return out
		}
		t.ws++
		return append(out, p)
	}
	t.ws = 0
	switch t.phase {
	case phStart, phAfterVal:
		if b == '}' {
			if !n.free && n.nreq[t.idx] > 0 {
				return out
			}
			return append(out, pop(p))
		}
		if t.phase == phStart {
			if b != '"' {
				return out
			}
			return startKey(p, out)
		}
		if b != ',' {
			return out
		}
		if !n.free && int(t.idx) >= len(n.props) {
			return out
		}
		if !n.free && n.minOpt[t.idx] < 0 {
			return out
		}
		t.phase = phAfterCom
		return append(out, p)
	case phAfterCom:
		if b != '"' {
			return out
		}
		return startKey(p, out)
	case phAfterKey:
		if b != ':' {
			return out
		}
		t.phase = phAfterVal
		t.emitted = true
		val := n.addl
		if !n.free {
			val = n.props[t.idx-1].val
		}
		return pushValue(p, val, out)
	}
	return out
}

// startKey reads the opening quote of a key: any string in a free object,
// else one of the props that may come next (optional ones up to the first
// required one), each as a literal.
func startKey(p path, out []path) []path {
	n := p.top.n
	p.top.phase = phAfterKey
	if n.free {
		q, ok := push(p, frame{kind: fString, n: anyString, key: true})
		if ok {
			out = append(out, q)
		}
		return out
	}
	for j := int(p.top.idx); j < len(n.props); j++ {
		pr := n.props[j]
		if pr.val.min >= 0 {
			q := p
			q.top.idx = int32(j + 1)
			if q2, ok := push(q, frame{kind: fLit, lit: pr.key, pos: 1}); ok {
				out = append(out, q2)
			}
		}
		if pr.required {
			break
		}
	}
	return out
}

func stepArray(p path, b byte, out []path) []path {
	t := &p.top
	n := t.n
	if isWS(b) {
		if t.ws >= maxWhitespace {
			return out
		}
		t.ws++
		return append(out, p)
	}
	t.ws = 0
	canClose := int(t.idx) >= n.minItems
	canMore := n.maxItems < 0 || int(t.idx) < n.maxItems
	if it := n.itemAt(int(t.idx)); it == nil || it.min < 0 {
		canMore = false
	}
	switch t.phase {
	case phStart:
		if b == ']' {
			if !canClose {
				return out
			}
			return append(out, pop(p))
		}
		if !canMore {
			return out
		}
		item := n.itemAt(0)
		t.phase, t.idx = phAfterVal, 1
		q, ok := push(p, frame{kind: fValue, n: item})
		if !ok {
			return out
		}
		return step(q, b, out)
	case phAfterVal:
		switch {
		case b == ']' && canClose:
			return append(out, pop(p))
		case b == ',' && canMore:
			t.phase = phAfterCom
			return append(out, p)
		}
	case phAfterCom:
		item := n.itemAt(int(t.idx))
		t.phase = phAfterVal
		t.idx++
		q, ok := push(p, frame{kind: fValue, n: item})
		if !ok {
			return out
		}
		return step(q, b, out)
	}
	return out
}

// dist is the fewest bytes that complete the document along p, or -1.
func (p *path) dist() int {
	d := frameDist(&p.top)
	if d < 0 {
		return -1
	}
	if p.below == nil { // the root, complete
		return d
	}
	return d + p.below.cum
}

// frameDist is the fewest bytes that finish f, given that the frame above
// it (if any) is finished.
func frameDist(f *frame) int {
	n := f.n
	switch f.kind {
	case fRoot:
		return 0
	case fValue:
		return n.min
	case fLit:
		return len(f.lit) - int(f.pos)
	case fString:
		d := 1 + max(0, n.minLen-int(f.count)) + int(f.u8need)
		switch {
		case f.esc == 1:
			d++
		case f.esc >= 2:
			d += 6 - int(f.esc)
		}
		return d
	case fNumber:
		return numDist(n, &f.num)
	case fObject:
		if n.free {
			switch f.phase {
			case phAfterCom:
				return 2 + 1 + n.addl.min + 1
			case phAfterKey:
				return 1 + n.addl.min + 1
			}
			return 1
		}
		tail := func(i int, emitted bool) int {
			d := n.reqLen[i] + 1
			if k := n.nreq[i]; k > 0 {
				d += k
				if !emitted {
					d--
				}
			}
			return d
		}
		switch f.phase {
		case phStart:
			return tail(int(f.idx), false)
		case phAfterVal:
			return tail(int(f.idx), true)
		case phAfterCom:
			if n.nreq[f.idx] > 0 {
				return tail(int(f.idx), false)
			}
			return n.minOpt[f.idx] + 1
		case phAfterKey:
			return 1 + n.props[f.idx-1].val.min + tail(int(f.idx), true)
		}
	case fArray:
		c := int(f.idx)
		need := func(c int) int {
			if c >= n.minItems {
				return 1
			}
			return n.need[c]
		}
		switch f.phase {
		case phStart:
			if n.minItems == 0 {
				return 1
			}
			return n.itemAt(0).min + need(1)
		case phAfterVal:
			return need(c)
		case phAfterCom:
			return n.itemAt(c).min + need(c+1)
		}
	}
	return -1
}

// PlainString describes a state inside a string, reading no escape or
// UTF-8 sequence, with one reading only: there, a run of n plain bytes
// (printable ASCII but '"' and '\') is accepted exactly when maxLen < 0 or
// count+n ≤ maxLen, and leaves Dist() − min(n, max(0, minLen−count)) bytes
// to close. Callers use it to accept such runs without stepping them byte
// by byte.
func (s State) PlainString() (count, minLen, maxLen int, ok bool) {
	if len(s.paths) != 1 {
		return 0, 0, 0, false
	}
	t := &s.paths[0].top
	if t.kind != fString || t.esc != 0 || t.u8need != 0 {
		return 0, 0, 0, false
	}
	return int(t.count), t.n.minLen, t.n.maxLen, true
}

// IsPlain reports whether b is a plain string byte (see PlainString).
func IsPlain(b byte) bool { return b >= 0x20 && b < 0x7F && b != '"' && b != '\\' }

// InPlainString reports whether every reading of s is inside a string,
// reading no escape or UTF-8 sequence (s alive). There a run of n plain
// bytes is accepted by the readings that PlainRunDist counts, and a
// caller may accept such runs without stepping them byte by byte, for
// one reading or the most a state keeps alike.
func (s State) InPlainString() bool {
	if len(s.paths) == 0 {
		return false
	}
	for i := range s.paths {
		t := &s.paths[i].top
		if t.kind != fString || t.esc != 0 || t.u8need != 0 {
			return false
		}
	}
	return true
}

// PlainRunDist is, for a state InPlainString, the Dist of the state after
// n ≥ 0 plain bytes (IsPlain), or -1 when no reading accepts them: a
// reading accepts them when its maxLen < 0 or count+n ≤ maxLen, and is
// left Dist() − min(n, max(0, minLen−count)) bytes from a close. It is
// exactly what feeding the bytes one by one gives, and -1 for n stays -1
// for every longer run.
func (s State) PlainRunDist(n int) int {
	best := -1
	for i := range s.paths {
		p := &s.paths[i]
		t := &p.top
		if t.n.maxLen >= 0 && int(t.count)+n > t.n.maxLen {
			continue
		}
		d := p.dist()
		if d < 0 {
			continue
		}
		d -= min(n, max(0, t.n.minLen-int(t.count)))
		if best < 0 || d < best {
			best = d
		}
	}
	return best
}
