package jsongrammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/tollgate-ai/tollgate/internal/task"
)

// Limits on what Compile accepts.
const (
	MaxSchemaBytes = 256 << 10 // schema text
	MaxSchemaDepth = 32        // nesting of schemas inside schemas
	MaxNodes       = 10000     // compiled schemas, $ref targets included
	MaxEnum        = 1000      // values of one enum
	MaxItemsBound  = 1000      // largest minItems honoured
	MaxLengthBound = 10000     // largest minLength honoured
	// MaxShortestBytes bounds the shortest value of every part of a schema,
	// so distances never overflow and no schema demands a document longer
	// than any context.
	MaxShortestBytes = 1 << 20
	// MaxValueDepth bounds the nesting of generated values (objects and
	// arrays inside each other), which bounds recursion through $ref.
	MaxValueDepth = 64
	// MaxAlternatives bounds the distinct alternatives one anyOf/oneOf
	// stands for once nested unions and $ref are expanded (shared targets
	// count once).
	MaxAlternatives = MaxEnum
)

// maxFlattenWork bounds the steps of expanding every union of a schema.
const maxFlattenWork = 1 << 22

// Generated numbers: no exponent, at most this many digits.
const (
	maxIntDigits  = 16 // integers: up to 9999999999999999 (covers ±2^53−1)
	maxNumInt     = 12 // numbers: integer part
	maxNumFrac    = 6  // numbers: fraction part
	maxWhitespace = 0  // whitespace bytes in a row between tokens: output is compact
)

type kind uint8

const (
	kObject kind = iota
	kArray
	kString
	kNumber
	kInteger
	kEnum  // one of literal encodings (also boolean and null)
	kUnion // one of alts
)

// node is a compiled schema.
type node struct {
	kind kind
	// kObject: props in emission order; free: keys are arbitrary strings
	// whose values match addl.
	props []prop
	free  bool
	addl  *node
	// reqLen[i], nreq[i]: bytes of the required props i.. (key, colon and
	// minimal value) and their count; minOpt[i]: cheapest prop i.. of any kind.
	reqLen, nreq, minOpt []int
	// kArray
	prefix             []*node
	items              *node // nil: no items past prefix
	minItems, maxItems int   // maxItems < 0: unbounded
	need               []int // need[c]: bytes to finish after c items (c ≤ minItems)
	// kString
	minLen, maxLen int // characters; maxLen < 0: unbounded
	// kNumber, kInteger
	lo, hi         float64
	loExcl, hiExcl bool
	// kEnum
	lits [][]byte
	// kUnion
	alts []*node

	// flat: the non-union nodes this one may be (itself when not a union).
	flat []*node
	// min: bytes of the shortest value; -1 while not known.
	min int
}

type prop struct {
	key      []byte // encoded key, quotes included
	val      *node
	required bool
}

// Grammar is a compiled constraint: the JSON texts a generation may produce.
// It is immutable and safe for concurrent use.
type Grammar struct {
	root *node
}

// SchemaError is a schema Compile refused, with the JSON pointer of the
// offending part.
type SchemaError struct {
	Pointer string
	Msg     string
}

func (e *SchemaError) Error() string {
	if e.Pointer == "" {
		return "schema: " + e.Msg
	}
	return fmt.Sprintf("schema at %s: %s", e.Pointer, e.Msg)
}

var (
	anyGrammar    = &Grammar{root: newAny()}
	objectGrammar = &Grammar{root: anyGrammar.root.flat[0]}
)

// newAny is the schema {}: any JSON value. flat[0] is its object form.
func newAny() *node {
	anyN := &node{kind: kUnion, min: 1}
	obj := &node{kind: kObject, free: true, addl: anyN, min: 2}
	arr := &node{kind: kArray, items: anyN, maxItems: -1, need: []int{1}, min: 2}
	str := &node{kind: kString, maxLen: -1, min: 2}
	num := &node{kind: kNumber, lo: math.Inf(-1), hi: math.Inf(1), min: 1}
	lits := &node{kind: kEnum, lits: [][]byte{[]byte("true"), []byte("false"), []byte("null")}, min: 4}
	anyN.alts = []*node{obj, arr, str, num, lits}
	anyN.flat = anyN.alts
	for _, n := range anyN.alts {
		n.flat = []*node{n}
	}
	return anyN
}

// JSONObject is response_format json_object: any JSON object.
func JSONObject() *Grammar { return objectGrammar }

// ForFormat returns the grammar of a response_format: nil for none or
// "text", JSONObject for "json_object", the compiled schema for
// "json_schema" (a missing schema allows any JSON value). It is cheap
// enough to run when a request arrives, so a gateway can refuse a bad
// schema before dispatch.
func ForFormat(f *task.ResponseFormat) (*Grammar, error) {
	if f == nil {
		return nil, nil
	}
	switch f.Type {
	case "", task.FormatText:
		return nil, nil
	case task.FormatJSONObject:
		return JSONObject(), nil
	case task.FormatJSONSchema:
		if len(bytes.TrimSpace(f.Schema)) == 0 {
			return anyGrammar, nil
		}
		return Compile(f.Schema, f.Strict)
	}
	return nil, fmt.Errorf("response_format type %q is not one of text, json_object, json_schema", f.Type)
}

// compiler holds the state of one Compile.
type compiler struct {
	strict bool
	doc    *jobj
	refs   map[string]*node // $ref target pointer → node (shared, may cycle)
	nodes  int
	all    []*node
}

// Compile compiles a JSON Schema (the subset in the package comment). With
// strict, keywords outside the subset are refused with an error naming
// them; without it they are ignored (the output then satisfies the schema
// without them).
func Compile(schema []byte, strict bool) (*Grammar, error) {
	if len(schema) > MaxSchemaBytes {
		return nil, &SchemaError{Msg: fmt.Sprintf("%d bytes, more than the %d allowed", len(schema), MaxSchemaBytes)}
	}
	v, err := decodeOrdered(schema)
	if err != nil {
		return nil, &SchemaError{Msg: "not valid JSON: " + err.Error()}
	}
	c := &compiler{strict: strict, refs: map[string]*node{}}
	if m, ok := v.(*jobj); ok {
		c.doc = m
	}
	root, err := c.compile(v, "", 0)
	if err != nil {
		return nil, err
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	if root.min < 0 {
		return nil, &SchemaError{Msg: "no finite JSON value satisfies it (every branch recurses)"}
	}
	return &Grammar{root: root}, nil
}

// Annotation keywords, ignored.
var ignored = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "title": true, "description": true,
	"default": true, "examples": true, "deprecated": true, "readOnly": true, "writeOnly": true,
	"$defs": true, "definitions": true, "format": true, "strict": true,
	// Both forms of the number keywords are read below.
}

// Keywords read by compile.
var known = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true,
	"items": true, "prefixItems": true, "enum": true, "const": true, "anyOf": true, "oneOf": true,
	"$ref": true, "minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
	"minLength": true, "maxLength": true, "minItems": true, "maxItems": true,
}

func (c *compiler) newNode(n *node, ptr string) (*node, error) {
	c.nodes++
	if c.nodes > MaxNodes {
		return nil, &SchemaError{Pointer: ptr, Msg: fmt.Sprintf("more than %d schemas", MaxNodes)}
	}
	n.min = -1
	c.all = append(c.all, n)
	return n, nil
}

func (c *compiler) compile(v any, ptr string, depth int) (*node, error) {
	if depth > MaxSchemaDepth {
		return nil, &SchemaError{Pointer: ptr, Msg: fmt.Sprintf("nested more than %d deep", MaxSchemaDepth)}
	}
	switch s := v.(type) {
	case bool:
		if s {
			return c.anyNode(ptr)
		}
		return nil, &SchemaError{Pointer: ptr, Msg: "the schema false allows no value"}
	case *jobj:
		return c.compileObject(s, ptr, depth)
	}
	return nil, &SchemaError{Pointer: ptr, Msg: "a schema must be an object or a boolean"}
}

func (c *compiler) anyNode(ptr string) (*node, error) {
	a := newAny()
	for _, n := range append([]*node{a}, a.alts...) {
		c.nodes++
		c.all = append(c.all, n)
	}
	if c.nodes > MaxNodes {
		return nil, &SchemaError{Pointer: ptr, Msg: fmt.Sprintf("more than %d schemas", MaxNodes)}
	}
	return a, nil
}

func (c *compiler) compileObject(o *jobj, ptr string, depth int) (*node, error) {
	s := o.m
	keys := slices.Sorted(maps.Keys(s))
	for _, k := range keys {
		if !known[k] && !ignored[k] && c.strict {
			return nil, &SchemaError{Pointer: ptr, Msg: fmt.Sprintf("keyword %q is not supported by constrained decoding", k)}
		}
	}
	if ref, ok := s["$ref"]; ok {
		r, ok := ref.(string)
		if !ok {
			return nil, &SchemaError{Pointer: ptr + "/$ref", Msg: "$ref must be a string"}
		}
		if len(s) > 1 && c.strict {
			for _, k := range keys {
				if k != "$ref" && !ignored[k] {
					return nil, &SchemaError{Pointer: ptr, Msg: fmt.Sprintf("keyword %q beside $ref is not supported", k)}
				}
			}
		}
		return c.ref(r, ptr, depth)
	}
	// Combinators.
	for _, kw := range []string{"anyOf", "oneOf"} {
		raw, ok := s[kw]
		if !ok {
			continue
		}
		list, ok := raw.([]any)
		if !ok || len(list) == 0 {
			return nil, &SchemaError{Pointer: ptr + "/" + kw, Msg: kw + " must be a non-empty array"}
		}
		if len(list) > MaxEnum {
			return nil, &SchemaError{Pointer: ptr + "/" + kw, Msg: fmt.Sprintf("more than %d alternatives", MaxEnum)}
		}
		u, err := c.newNode(&node{kind: kUnion}, ptr)
		if err != nil {
			return nil, err
		}
		for i, alt := range list {
			a, err := c.compile(alt, fmt.Sprintf("%s/%s/%d", ptr, kw, i), depth+1)
			if err != nil {
				return nil, err
			}
			u.alts = append(u.alts, a)
		}
		if _, typed := s["type"]; typed {
			// "type" beside anyOf: both must hold; only the common shape of
			// nullable unions is supported.
			if c.strict {
				return nil, &SchemaError{Pointer: ptr, Msg: "type beside " + kw + " is not supported"}
			}
		}
		return u, nil
	}
	if lits, ok, err := literals(s, ptr); err != nil {
		return nil, err
	} else if ok {
		return c.newNode(&node{kind: kEnum, lits: lits}, ptr)
	}
	var types []string
	switch t := s["type"].(type) {
	case nil:
		if _, ok := s["type"]; ok {
			return nil, &SchemaError{Pointer: ptr + "/type", Msg: "type must be a string or an array of strings"}
		}
		types = inferTypes(s)
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			str, ok := x.(string)
			if !ok {
				return nil, &SchemaError{Pointer: ptr + "/type", Msg: "type must be a string or an array of strings"}
			}
			types = append(types, str)
		}
		if len(types) == 0 {
			return nil, &SchemaError{Pointer: ptr + "/type", Msg: "type must not be an empty array"}
		}
	default:
		return nil, &SchemaError{Pointer: ptr + "/type", Msg: "type must be a string or an array of strings"}
	}
	if len(types) == 0 {
		return c.anyNode(ptr)
	}
	var alts []*node
	for _, t := range types {
		n, err := c.typed(t, s, ptr, depth)
		if err != nil {
			return nil, err
		}
		alts = append(alts, n)
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	u, err := c.newNode(&node{kind: kUnion, alts: alts}, ptr)
	return u, err
}

// inferTypes picks the types of a schema without "type" from its
// keywords: each family of keywords present (object, array, string,
// number) contributes its type, so the keywords constrain what is
// generated; none: any value.
func inferTypes(s map[string]any) []string {
	has := func(kws ...string) bool {
		for _, k := range kws {
			if _, ok := s[k]; ok {
				return true
			}
		}
		return false
	}
	var types []string
	if has("properties", "required", "additionalProperties") {
		types = append(types, "object")
	}
	if has("items", "prefixItems", "minItems", "maxItems") {
		types = append(types, "array")
	}
	if has("minLength", "maxLength") {
		types = append(types, "string")
	}
	if has("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") {
		types = append(types, "number")
	}
	return types
}

func (c *compiler) typed(t string, s map[string]any, ptr string, depth int) (*node, error) {
	switch t {
	case "object":
		return c.object(s, ptr, depth)
	case "array":
		return c.array(s, ptr, depth)
	case "string":
		n := &node{kind: kString, maxLen: -1}
		var err error
		if n.minLen, err = count(s, "minLength", ptr, MaxLengthBound); err != nil {
			return nil, err
		}
		if n.maxLen, err = count(s, "maxLength", ptr, -1); err != nil {
			return nil, err
		}
		if _, ok := s["maxLength"]; !ok {
			n.maxLen = -1
		}
		if n.maxLen >= 0 && n.maxLen < n.minLen {
			return nil, &SchemaError{Pointer: ptr, Msg: "maxLength is below minLength"}
		}
		return c.newNode(n, ptr)
	case "integer", "number":
		n := &node{kind: kNumber, lo: math.Inf(-1), hi: math.Inf(1)}
		if t == "integer" {
			n.kind = kInteger
		}
		if err := bounds(n, s, ptr); err != nil {
			return nil, err
		}
		nn, err := c.newNode(n, ptr)
		if err != nil {
			return nil, err
		}
		if numMin(nn) < 0 {
			return nil, &SchemaError{Pointer: ptr, Msg: fmt.Sprintf("no %s this engine generates (at most %d integer digits, no exponent) lies within the bounds", t, maxNumInt)}
		}
		return nn, nil
	case "boolean":
		return c.newNode(&node{kind: kEnum, lits: [][]byte{[]byte("true"), []byte("false")}}, ptr)
	case "null":
		return c.newNode(&node{kind: kEnum, lits: [][]byte{[]byte("null")}}, ptr)
	}
	return nil, &SchemaError{Pointer: ptr + "/type", Msg: fmt.Sprintf("unknown type %q", t)}
}

func (c *compiler) object(s map[string]any, ptr string, depth int) (*node, error) {
	n, err := c.newNode(&node{kind: kObject}, ptr)
	if err != nil {
		return nil, err
	}
	req := map[string]bool{}
	if raw, ok := s["required"]; ok {
		list, ok := raw.([]any)
		if !ok {
			return nil, &SchemaError{Pointer: ptr + "/required", Msg: "required must be an array of strings"}
		}
		for _, x := range list {
			k, ok := x.(string)
			if !ok {
				return nil, &SchemaError{Pointer: ptr + "/required", Msg: "required must be an array of strings"}
			}
			req[k] = true
		}
	}
	var names []string
	var propsRaw map[string]any
	if raw, ok := s["properties"]; ok {
		po, ok := raw.(*jobj)
		if !ok {
			return nil, &SchemaError{Pointer: ptr + "/properties", Msg: "properties must be an object"}
		}
		propsRaw, names = po.m, po.keys // emitted in the schema's order
	}
	for _, k := range names {
		sub, err := c.compile(propsRaw[k], ptr+"/properties/"+escapePtr(k), depth+1)
		if err != nil {
			return nil, err
		}
		key, _ := encodeLiteral(k)
		n.props = append(n.props, prop{key: key, val: sub, required: req[k]})
		delete(req, k)
	}
	if len(req) > 0 {
		missing := make([]string, 0, len(req))
		for k := range req {
			missing = append(missing, k)
		}
		slices.Sort(missing)
		if c.strict || len(names) > 0 {
			return nil, &SchemaError{Pointer: ptr + "/required", Msg: fmt.Sprintf("required %q has no schema under properties", missing)}
		}
	}
	addl, hasAddl := s["additionalProperties"]
	switch a := addl.(type) {
	case bool:
		if a && len(names) == 0 {
			n.free, n.addl = true, nil
		}
	case *jobj:
		if len(names) == 0 {
			sub, err := c.compile(a, ptr+"/additionalProperties", depth+1)
			if err != nil {
				return nil, err
			}
			n.free, n.addl = true, sub
		} else if c.strict {
			return nil, &SchemaError{Pointer: ptr + "/additionalProperties", Msg: "a schema for additionalProperties beside properties is not supported"}
		}
	case nil:
		if hasAddl {
			return nil, &SchemaError{Pointer: ptr + "/additionalProperties", Msg: "additionalProperties must be a boolean or a schema"}
		}
		if len(names) == 0 && !c.strict {
			n.free = true
		}
	default:
		return nil, &SchemaError{Pointer: ptr + "/additionalProperties", Msg: "additionalProperties must be a boolean or a schema"}
	}
	if c.strict && addl != false && len(names) > 0 {
		return nil, &SchemaError{Pointer: ptr + "/additionalProperties", Msg: "strict schemas must set additionalProperties to false"}
	}
	if n.free && n.addl == nil {
		a, err := c.anyNode(ptr)
		if err != nil {
			return nil, err
		}
		n.addl = a
	}
	return n, nil
}

func (c *compiler) array(s map[string]any, ptr string, depth int) (*node, error) {
	n, err := c.newNode(&node{kind: kArray, maxItems: -1}, ptr)
	if err != nil {
		return nil, err
	}
	if raw, ok := s["prefixItems"]; ok {
		list, ok := raw.([]any)
		if !ok {
			return nil, &SchemaError{Pointer: ptr + "/prefixItems", Msg: "prefixItems must be an array of schemas"}
		}
		for i, x := range list {
			sub, err := c.compile(x, fmt.Sprintf("%s/prefixItems/%d", ptr, i), depth+1)
			if err != nil {
				return nil, err
			}
			n.prefix = append(n.prefix, sub)
		}
	}
	switch it := s["items"].(type) {
	case nil:
		if _, ok := s["items"]; ok {
			return nil, &SchemaError{Pointer: ptr + "/items", Msg: "items must be a schema"}
		}
		if n.items, err = c.anyNode(ptr); err != nil {
			return nil, err
		}
	case bool:
		if it {
			if n.items, err = c.anyNode(ptr); err != nil {
				return nil, err
			}
		}
	case *jobj:
		if n.items, err = c.compile(it, ptr+"/items", depth+1); err != nil {
			return nil, err
		}
	default:
		return nil, &SchemaError{Pointer: ptr + "/items", Msg: "items must be a schema (the array form is prefixItems)"}
	}
	if n.minItems, err = count(s, "minItems", ptr, MaxItemsBound); err != nil {
		return nil, err
	}
	if _, ok := s["maxItems"]; ok {
		if n.maxItems, err = count(s, "maxItems", ptr, -1); err != nil {
			return nil, err
		}
	}
	if n.items == nil && (n.maxItems < 0 || n.maxItems > len(n.prefix)) {
		n.maxItems = len(n.prefix)
	}
	if n.maxItems >= 0 && n.maxItems < n.minItems {
		return nil, &SchemaError{Pointer: ptr, Msg: "maxItems is below minItems (or items is false past prefixItems)"}
	}
	return n, nil
}

// itemAt is the schema of item i.
func (n *node) itemAt(i int) *node {
	if i < len(n.prefix) {
		return n.prefix[i]
	}
	return n.items
}

// ref resolves a local $ref: "#", "#/$defs/Name", "#/definitions/Name" or
// any JSON pointer into the document. Targets are compiled once and shared,
// so recursive schemas become cycles, bounded at run time by MaxValueDepth.
func (c *compiler) ref(r, ptr string, depth int) (*node, error) {
	if !strings.HasPrefix(r, "#") {
		return nil, &SchemaError{Pointer: ptr + "/$ref", Msg: fmt.Sprintf("$ref %q is not local (only #/... is supported)", r)}
	}
	target := r[1:]
	if n, ok := c.refs[target]; ok {
		return n, nil
	}
	var v any = c.doc
	if c.doc == nil {
		return nil, &SchemaError{Pointer: ptr + "/$ref", Msg: "$ref in a boolean schema"}
	}
	if target != "" {
		if target[0] != '/' {
			return nil, &SchemaError{Pointer: ptr + "/$ref", Msg: fmt.Sprintf("$ref %q is not a JSON pointer", r)}
		}
		for _, tok := range strings.Split(target[1:], "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			o, ok := v.(*jobj)
			if !ok {
				return nil, &SchemaError{Pointer: ptr + "/$ref", Msg: fmt.Sprintf("$ref %q does not resolve", r)}
			}
			if v, ok = o.m[tok]; !ok {
				return nil, &SchemaError{Pointer: ptr + "/$ref", Msg: fmt.Sprintf("$ref %q does not resolve", r)}
			}
		}
	}
	// A placeholder union of one, filled once the target is compiled, so
	// a reference back to it inside the target closes a cycle.
	ph, err := c.newNode(&node{kind: kUnion}, ptr)
	if err != nil {
		return nil, err
	}
	c.refs[target] = ph
	n, err := c.compile(v, "#"+target, depth+1)
	if err != nil {
		return nil, err
	}
	ph.alts = []*node{n}
	return ph, nil
}

// finish computes flat alternatives and minimal lengths of every node.
func (c *compiler) finish() error {
	fl := flattener{seen: map[*node]int{}, budget: maxFlattenWork}
	// Inner schemas were created after the ones holding them: flattening
	// from the last node makes every nested union's list ready for reuse.
	for _, n := range slices.Backward(c.all) {
		if n.flat == nil {
			if err := fl.flatten(n); err != nil {
				return err
			}
		}
	}
	for _, n := range c.all {
		if len(n.flat) == 0 {
			return &SchemaError{Msg: "a $ref cycle refers only to itself"}
		}
	}
	// Fixed point of minimal lengths: a node's min is known once its
	// parts' are (recursive branches stay unknown and are never minimal).
	for changed := true; changed; {
		changed = false
		for _, n := range c.all {
			if n.min >= 0 {
				continue
			}
			if m := n.computeMin(); m >= 0 {
				if m > MaxShortestBytes {
					return &SchemaError{Msg: fmt.Sprintf("its shortest value is more than %d bytes", MaxShortestBytes)}
				}
				n.min = m
				changed = true
			}
		}
	}
	for _, n := range c.all {
		if n.min < 0 {
			continue
		}
		n.tables()
	}
	for _, n := range c.all {
		if n.min < 0 {
			// Unreachable by a finite value: prune it from unions.
			continue
		}
		n.flat = slices.DeleteFunc(n.flat, func(x *node) bool { return x.min < 0 })
	}
	return nil
}

// flattener computes the flat alternatives of unions: the distinct
// non-union nodes reachable through anyOf/oneOf/$ref, in the order of a
// depth-first walk. Each union's list is memoised (a union already
// flattened contributes its list without being walked again) and
// duplicates are dropped, so shared $ref unions cost their size once,
// not width^depth; the walk stops with an error past MaxAlternatives
// distinct alternatives or maxFlattenWork steps in all, so the work of
// Compile is bounded whatever the schema.
type flattener struct {
	seen   map[*node]int // node → stamp of the walk that reached it
	stamp  int
	budget int
	out    []*node
}

func (f *flattener) flatten(root *node) error {
	if root.kind != kUnion {
		root.flat = []*node{root}
		return nil
	}
	f.stamp++
	f.out = nil
	if err := f.walk(root); err != nil {
		return err
	}
	root.flat = slices.Clip(f.out)
	return nil
}

func (f *flattener) tooMany() error {
	return &SchemaError{Msg: fmt.Sprintf("anyOf/oneOf/$ref expansion exceeds %d alternatives", MaxAlternatives)}
}

func (f *flattener) add(n *node) error {
	if f.seen[n] == f.stamp {
		return nil
	}
	f.seen[n] = f.stamp
	f.out = append(f.out, n)
	if len(f.out) > MaxAlternatives {
		return f.tooMany()
	}
	return nil
}

func (f *flattener) walk(n *node) error {
	f.budget--
	if f.budget < 0 {
		return f.tooMany()
	}
	if n.kind != kUnion {
		return f.add(n)
	}
	if f.seen[n] == f.stamp {
		return nil // a cycle, or a union reached twice
	}
	f.seen[n] = f.stamp
	if n.flat != nil {
		// Flattened already: its list is complete (every walk follows
		// all of a union's reach), so it is used as it is.
		f.budget -= len(n.flat)
		if f.budget < 0 {
			return f.tooMany()
		}
		for _, a := range n.flat {
			if err := f.add(a); err != nil {
				return err
			}
		}
		return nil
	}
	for _, a := range n.alts {
		if err := f.walk(a); err != nil {
			return err
		}
	}
	return nil
}

// computeMin is the length of n's shortest value, or -1 if a part's is
// not known yet.
func (n *node) computeMin() int {
	switch n.kind {
	case kUnion:
		best := -1
		for _, a := range n.flat {
			if a.min >= 0 && (best < 0 || a.min < best) {
				best = a.min
			}
		}
		return best
	case kEnum:
		best := -1
		for _, l := range n.lits {
			if best < 0 || len(l) < best {
				best = len(l)
			}
		}
		return best
	case kString:
		return 2 + n.minLen
	case kNumber, kInteger:
		return numMin(n)
	case kObject:
		total, k := 2, 0
		for _, p := range n.props {
			if !p.required {
				continue
			}
			if p.val.min < 0 {
				return -1
			}
			total += len(p.key) + 1 + p.val.min
			k++
		}
		if k > 1 {
			total += k - 1
		}
		return total
	case kArray:
		total := 2
		for i := 0; i < n.minItems; i++ {
			it := n.itemAt(i)
			if it == nil || it.min < 0 {
				return -1
			}
			total += it.min
			if i > 0 {
				total++
			}
		}
		return total
	}
	return -1
}

// tables precomputes the per-position distances of objects and arrays.
func (n *node) tables() {
	switch n.kind {
	case kObject:
		k := len(n.props)
		n.reqLen, n.nreq, n.minOpt = make([]int, k+1), make([]int, k+1), make([]int, k+1)
		n.minOpt[k] = -1
		for i := k - 1; i >= 0; i-- {
			p := n.props[i]
			n.reqLen[i], n.nreq[i], n.minOpt[i] = n.reqLen[i+1], n.nreq[i+1], n.minOpt[i+1]
			if p.val.min < 0 {
				continue
			}
			cost := len(p.key) + 1 + p.val.min
			if p.required {
				n.reqLen[i] += cost
				n.nreq[i]++
			}
			if n.minOpt[i] < 0 || cost < n.minOpt[i] {
				n.minOpt[i] = cost
			}
		}
	case kArray:
		n.need = make([]int, n.minItems+1)
		n.need[n.minItems] = 1
		for c := n.minItems - 1; c >= 0; c-- {
			n.need[c] = n.need[c+1] + 1 + n.itemAt(c).min
		}
	}
}

// encodeLiteral is the compact encoding of an enum or const value, the
// only encoding generated for it.
func encodeLiteral(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if num, ok := v.(json.Number); ok {
		// Keep the schema's number text only when it is one the number
		// grammar reads back to the same value.
		if _, err := num.Float64(); err != nil {
			return nil, errors.New("enum number out of range")
		}
	}
	return out, nil
}

func escapePtr(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// count reads a non-negative integer keyword, capped at limit (< 0: none).
func count(s map[string]any, kw, ptr string, limit int) (int, error) {
	raw, ok := s[kw]
	if !ok {
		return 0, nil
	}
	num, ok := raw.(json.Number)
	if !ok {
		return 0, &SchemaError{Pointer: ptr + "/" + kw, Msg: kw + " must be a non-negative integer"}
	}
	i, err := num.Int64()
	if err != nil || i < 0 {
		return 0, &SchemaError{Pointer: ptr + "/" + kw, Msg: kw + " must be a non-negative integer"}
	}
	if limit >= 0 && i > int64(limit) {
		return 0, &SchemaError{Pointer: ptr + "/" + kw, Msg: fmt.Sprintf("%s %d is more than the %d supported", kw, i, limit)}
	}
	if i > math.MaxInt32 {
		i = math.MaxInt32
	}
	return int(i), nil
}

// bounds reads minimum, maximum and both forms of the exclusive bounds
// (draft 2020 numbers, draft 4 booleans).
func bounds(n *node, s map[string]any, ptr string) error {
	num := func(kw string) (float64, bool, error) {
		raw, ok := s[kw]
		if !ok {
			return 0, false, nil
		}
		x, ok := raw.(json.Number)
		if !ok {
			return 0, false, nil
		}
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) {
			return 0, false, &SchemaError{Pointer: ptr + "/" + kw, Msg: kw + " is out of range"}
		}
		return f, true, nil
	}
	for _, kw := range []string{"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} {
		if raw, ok := s[kw]; ok {
			if _, isNum := raw.(json.Number); !isNum {
				if _, isBool := raw.(bool); !isBool || !strings.HasPrefix(kw, "exclusive") {
					return &SchemaError{Pointer: ptr + "/" + kw, Msg: kw + " must be a number"}
				}
			}
		}
	}
	if f, ok, err := num("minimum"); err != nil {
		return err
	} else if ok {
		n.lo = f
	}
	if f, ok, err := num("maximum"); err != nil {
		return err
	} else if ok {
		n.hi = f
	}
	if b, ok := s["exclusiveMinimum"].(bool); ok {
		n.loExcl = b
	} else if f, ok, err := num("exclusiveMinimum"); err != nil {
		return err
	} else if ok && (f > n.lo || (f == n.lo && !n.loExcl)) {
		n.lo, n.loExcl = f, true
	}
	if b, ok := s["exclusiveMaximum"].(bool); ok {
		n.hiExcl = b
	} else if f, ok, err := num("exclusiveMaximum"); err != nil {
		return err
	} else if ok && (f < n.hi || (f == n.hi && !n.hiExcl)) {
		n.hi, n.hiExcl = f, true
	}
	if n.lo > n.hi || (n.lo == n.hi && (n.loExcl || n.hiExcl)) {
		return &SchemaError{Pointer: ptr, Msg: "the bounds leave no value"}
	}
	return nil
}

// literals reads const and enum (both: the const if the enum lists it),
// keeping only values of the schema's type when it names one.
func literals(s map[string]any, ptr string) ([][]byte, bool, error) {
	rawConst, hasConst := s["const"]
	rawEnum, hasEnum := s["enum"]
	if !hasConst && !hasEnum {
		return nil, false, nil
	}
	var lits [][]byte
	if hasEnum {
		list, ok := rawEnum.([]any)
		if !ok || len(list) == 0 {
			return nil, false, &SchemaError{Pointer: ptr + "/enum", Msg: "enum must be a non-empty array"}
		}
		if len(list) > MaxEnum {
			return nil, false, &SchemaError{Pointer: ptr + "/enum", Msg: fmt.Sprintf("more than %d values", MaxEnum)}
		}
		for _, e := range list {
			lit, err := encodeLiteral(e)
			if err != nil {
				return nil, false, &SchemaError{Pointer: ptr + "/enum", Msg: err.Error()}
			}
			lits = append(lits, lit)
		}
	}
	if hasConst {
		lit, err := encodeLiteral(rawConst)
		if err != nil {
			return nil, false, &SchemaError{Pointer: ptr + "/const", Msg: err.Error()}
		}
		if hasEnum && !slices.ContainsFunc(lits, func(l []byte) bool { return bytes.Equal(l, lit) }) {
			return nil, false, &SchemaError{Pointer: ptr + "/const", Msg: "const is not one of enum"}
		}
		lits = [][]byte{lit}
	}
	var types []string
	switch t := s["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			if str, ok := x.(string); ok {
				types = append(types, str)
			}
		}
	}
	if len(types) > 0 {
		lits = slices.DeleteFunc(lits, func(l []byte) bool {
			return !slices.ContainsFunc(types, func(t string) bool { return literalIs(l, t) })
		})
		if len(lits) == 0 {
			return nil, false, &SchemaError{Pointer: ptr, Msg: fmt.Sprintf("no enum or const value is of type %v", types)}
		}
	}
	return lits, true, nil
}

// literalIs reports whether the encoded literal l is a JSON value of type t.
func literalIs(l []byte, t string) bool {
	switch l[0] {
	case '"':
		return t == "string"
	case '{':
		return t == "object"
	case '[':
		return t == "array"
	case 't', 'f':
		return t == "boolean"
	case 'n':
		return t == "null"
	}
	if t == "number" {
		return true
	}
	if t != "integer" {
		return false
	}
	f, err := strconv.ParseFloat(string(l), 64)
	return err == nil && f == math.Trunc(f)
}
