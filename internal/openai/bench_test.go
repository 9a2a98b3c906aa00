package openai

import "testing"

// BenchmarkFastChatParse: the plain SDK body on the fast path, and one
// with tools on the general path.
func BenchmarkFastChatParse(b *testing.B) {
	for _, c := range []struct{ name, body string }{
		{"plain", `{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"Hi there, what is the weather like?"}],"model":"m","max_tokens":16,"temperature":0.7,"stream":false}`},
		{"tools", `{"model":"m",` + userHi + `,"tools":[` + weatherTool + `],"tool_choice":"auto"}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			body := []byte(c.body)
			for b.Loop() {
				if _, err := ParseChat(body, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
