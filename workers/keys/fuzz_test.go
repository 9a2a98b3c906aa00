package keys_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/workers/keys"
)

// FuzzRead: a key file is either refused or a key whose file, written
// again, reads back as the same key; it never panics. Seeded from
// TestReadRejects' table.
func FuzzRead(f *testing.F) {
	k, _ := keys.Generate(nil)
	var buf bytes.Buffer
	k.Write(&buf)
	good := buf.String()
	other, _ := keys.Generate(nil)
	for _, s := range []string{
		good, "", "nope",
		strings.Replace(good, keys.FileType, "other", 1),
		strings.Replace(good, `"version": 1`, `"version": 9`, 1),
		strings.Replace(good, k.PublicHex(), other.PublicHex(), 1),
		strings.Replace(good, "{", `{"extra": 1,`, 1),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		k, err := keys.Read(bytes.NewReader(file))
		if err != nil {
			return
		}
		var again bytes.Buffer
		if err := k.Write(&again); err != nil {
			t.Fatal(err)
		}
		k2, err := keys.Read(&again)
		if err != nil {
			t.Fatalf("a key read from %q does not read back: %v", file, err)
		}
		if k2.PublicHex() != k.PublicHex() || k2.WorkerID() != k.WorkerID() {
			t.Fatalf("round trip changed the key")
		}
	})
}
