package workers_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/workers"
)

// The signed registration line cannot be forged by moving text between a
// model's name, digest and capabilities, and unknown or repeated
// capabilities are refused.
func TestRedteamCapabilityLine(t *testing.T) {
	d := strings.Repeat("ab", 32)
	honest := []task.ModelVersion{{Name: "m", Digest: d, Capabilities: []task.Capability{task.CapTools}}}
	plain := []task.ModelVersion{{Name: "m", Digest: d}}
	if bytes.Equal(workers.RegistrationMessage("c", "p", "u", honest), workers.RegistrationMessage("c", "p", "u", plain)) {
		t.Fatal("capabilities are not signed")
	}
	forged := []task.ModelVersion{
		{Name: "m", Digest: d + " capabilities=tools"},
		{Name: "m capabilities=tools", Digest: d},
		{Name: "m\ncapabilities=tools", Digest: d},
		{Name: "m", Digest: d, Capabilities: []task.Capability{"tools,vision"}},
		{Name: "m", Digest: d, Capabilities: []task.Capability{"admin"}},
		{Name: "m", Digest: d, Capabilities: []task.Capability{task.CapTools, task.CapTools}},
		{Name: "m", Digest: d, Capabilities: []task.Capability{" tools"}},
		{Name: "m", Digest: d, Capabilities: []task.Capability{"TOOLS"}},
	}
	for _, m := range forged {
		if err := task.ValidateModelVersion(m); err == nil {
			t.Errorf("%+v validated", m)
		}
	}
	if _, err := task.ParseCapabilities("tools,,vision"); err == nil {
		t.Error("empty capability name parsed")
	}
	// Order matters for the signature but not for meaning: two orders are
	// two distinct, both valid, signed lines.
	a := []task.ModelVersion{{Name: "m", Digest: d, Capabilities: []task.Capability{task.CapTools, task.CapN}}}
	b := []task.ModelVersion{{Name: "m", Digest: d, Capabilities: []task.Capability{task.CapN, task.CapTools}}}
	if bytes.Equal(workers.RegistrationMessage("c", "p", "u", a), workers.RegistrationMessage("c", "p", "u", b)) {
		t.Error("capability order not signed")
	}
}
