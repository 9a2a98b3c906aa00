package schematest

import "testing"

func TestValidate(t *testing.T) {
	tests := []struct {
		name, schema, doc string
		ok                bool
	}{
		{"type", `{"type":"integer"}`, `3`, true},
		{"type float", `{"type":"integer"}`, `3.5`, false},
		{"type array", `{"type":["string","null"]}`, `null`, true},
		{"required", `{"type":"object","properties":{"a":{}},"required":["a"]}`, `{}`, false},
		{"additional", `{"type":"object","properties":{"a":{}},"additionalProperties":false}`, `{"b":1}`, false},
		{"additional schema", `{"type":"object","additionalProperties":{"type":"integer"}}`, `{"b":"x"}`, false},
		{"enum", `{"enum":["a",1]}`, `1.0`, true},
		{"enum miss", `{"enum":["a",1]}`, `"b"`, false},
		{"const", `{"const":{"x":[1]}}`, `{"x":[1]}`, true},
		{"bounds", `{"minimum":1,"exclusiveMaximum":2}`, `2`, false},
		{"draft4 exclusive", `{"minimum":1,"exclusiveMinimum":true}`, `1`, false},
		{"length runes", `{"maxLength":2}`, `"é€"`, true},
		{"items", `{"items":{"type":"string"},"minItems":1}`, `[]`, false},
		{"prefix", `{"prefixItems":[{"type":"integer"}],"items":false}`, `[1,2]`, false},
		{"ref", `{"$ref":"#/$defs/a","$defs":{"a":{"type":"boolean"}}}`, `true`, true},
		{"anyOf", `{"anyOf":[{"type":"string"},{"type":"null"}]}`, `1`, false},
		{"invalid json", `{}`, `{`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate([]byte(tt.schema), []byte(tt.doc)); (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
