package task

import "testing"

// TestValidateHeartbeatLoad: a worker's load report is bounded and named:
// counts non-negative, KV use in [0, 1], a short source, and "unknown"
// naming only the three fields, each at most once in practice (at most
// three entries).
func TestValidateHeartbeatLoad(t *testing.T) {
	cases := []struct {
		name string
		load Load
		ok   bool
	}{
		{"plain", Load{Waiting: 2, Running: 1, KVCacheUsage: 0.5, Source: "vllm"}, true},
		{"llama.cpp without KV gauge", Load{Running: 1, Source: "llamacpp", Unknown: []string{"kv_cache_usage"}}, true},
		{"all unknown", Load{Source: "x", Unknown: []string{"waiting", "running", "kv_cache_usage"}}, true},
		{"negative waiting", Load{Waiting: -1}, false},
		{"usage above one", Load{KVCacheUsage: 1.5}, false},
		{"long source", Load{Source: string(make([]byte, 65))}, false},
		{"unknown field named", Load{Unknown: []string{"temperature"}}, false},
		{"too many unknowns", Load{Unknown: []string{"waiting", "waiting", "waiting", "waiting"}}, false},
	}
	for _, c := range cases {
		err := ValidateHeartbeat(&Heartbeat{WorkerID: "0xw", Load: c.load})
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestParseCapabilities(t *testing.T) {
	cases := []struct {
		in   string
		want string
		ok   bool
	}{
		{"none", "", true},
		{"", "", true},
		{"all", "tools,json_object,json_schema,logprobs,n,vision,audio,dimensions", true},
		{"tools, json_schema", "tools,json_schema", true},
		{"tools,tools", "", false},
		{"Tools", "", false},
		{"tools,", "", false},
		{"mind_reading", "", false},
	}
	for _, c := range cases {
		got, err := ParseCapabilities(c.in)
		if (err == nil) != c.ok || err == nil && CapabilityList(got) != c.want {
			t.Errorf("%q: %v, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}
