// Package jsongrammar is the recogniser behind structured outputs
// (response_format json_object and json_schema) in the built-in engine: an
// incremental, byte-level pushdown recogniser of the JSON texts a schema
// allows, which the engine walks over its vocabulary to mask tokens that
// cannot extend a valid prefix.
//
// # What is generated
//
// The recogniser accepts a subset of the JSON texts that satisfy the
// schema, chosen so that every accepted prefix can still be completed and
// the fewest bytes to complete it (State.Dist) are known at every step:
//
//   - no whitespace outside strings: the output is compact, so a small
//     model spends no tokens on layout;
//   - object properties in the schema's order, each at most once; optional
//     ones may be skipped, required ones never (as OpenAI's strict mode);
//     properties not in the schema are never generated; an object schema
//     without properties whose additionalProperties is true or a schema
//     (or absent, without strict) takes any keys;
//   - strings: valid UTF-8, no raw control characters, escapes \" \\ \/
//     \b \f \n \r \t and \uXXXX outside the surrogates (each one character
//     for minLength/maxLength);
//   - numbers: no exponent; integers up to 16 digits, numbers up to 12
//     integer and 6 fraction digits; minimum, maximum, exclusiveMinimum and
//     exclusiveMaximum (draft 2020 numbers and draft 4 booleans) enforced
//     on the float64 value of the text, for integer and number alike (zod
//     4's z.number().int() bounds ±9007199254740991 included);
//   - enum and const values in their compact encoding only.
//
// # Schemas
//
// Compile reads: type (a name or an array of names), properties, required,
// additionalProperties, items, prefixItems, enum, const, anyOf, oneOf
// (read as anyOf: output satisfies at least one branch), local $ref
// (#, #/$defs/..., #/definitions/..., any pointer; recursion is bounded by
// MaxValueDepth nested values), minLength, maxLength, minItems, maxItems and
// the bounds above. Annotations are ignored: $schema, $id, $comment, title,
// description, default, examples, deprecated, readOnly, writeOnly, and
// format (not enforced: a "date-time" string is any string). Any other
// keyword (pattern, minProperties, allOf, not, if, ...) is refused with
// strict, naming it, and ignored without strict, where the output then
// satisfies the schema without that keyword. Strict also requires
// additionalProperties false beside properties. Limits: MaxSchemaBytes,
// MaxSchemaDepth, MaxNodes, MaxEnum, MaxItemsBound, MaxLengthBound, and
// MaxAlternatives: the distinct alternatives one anyOf/oneOf stands for
// once nested unions and $ref targets are expanded. A target shared by
// several branches counts once and is expanded once (each union's
// expansion is memoised), so expansion costs a schema's size, not the
// product of its unions' widths; past MaxAlternatives, or past a fixed
// budget of expansion steps, Compile fails with "anyOf/oneOf/$ref
// expansion exceeds N alternatives". Compile (and ForFormat) therefore
// run in time bounded by the schema's size.
//
// A schema whose every value recurses forever, or whose bounds leave no
// generable number, is refused. Compiling the schemas the SDKs send costs
// about 40-55 µs (BenchmarkCompile), cheap enough to check every request
// at the gateway with ForFormat.
//
// # Limits of the recogniser
//
// A state keeps at most 64 readings (anyOf branches, candidate keys, enum
// values sharing a prefix), each at most once per distinct schema reached
// through unions; past that the extra ones are dropped, which
// only narrows what may be generated (an enum of more than 64 strings
// sharing their first bytes cannot produce the later ones until they
// diverge). oneOf is generated as anyOf, so a value matching two branches
// is possible. Additional properties are never generated, even where the
// schema allows them beside properties.
package jsongrammar
