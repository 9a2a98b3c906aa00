package keys_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/workers/keys"
)

func TestSignVerify(t *testing.T) {
	k, err := keys.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := keys.Generate(nil)
	msg := keys.BytesMessage([]byte("hello"))
	sig, err := k.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(sig)
	bad[len(bad)-1] ^= 1
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	tests := []struct {
		name string
		key  *keys.Key
		sig  []byte
		msg  []byte
		ok   bool
	}{
		{"valid", k, sig, msg, true},
		{"other message", k, sig, keys.BytesMessage([]byte("hellp")), false},
		{"other key", other, sig, msg, false},
		{"tampered signature", k, bad, msg, false},
		{"short signature", k, sig[:10], msg, false},
		{"message not elements", k, sig, msg[:31], false},
		{"non-canonical element", k, sig, nonCanonical, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := keys.Verify(tc.key.Public(), tc.sig, tc.msg)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify = %v, want ok %v", err, tc.ok)
			}
		})
	}
	if _, err := k.Sign(nonCanonical); err == nil {
		t.Error("Sign accepted a non-canonical element")
	}
	if err := keys.VerifyBytes(k.Public(), mustSign(t, k, []byte("data")), []byte("data")); err != nil {
		t.Error(err)
	}
}

func mustSign(t *testing.T, k *keys.Key, data []byte) []byte {
	sig, err := k.SignBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestWorkerIDMatchesReceipts(t *testing.T) {
	k, _ := keys.Generate(nil)
	if got, want := k.WorkerID(), receipts.WorkerID(k.Public()); got != want {
		t.Fatalf("keys.WorkerID = %s, receipts.WorkerID = %s", got, want)
	}
}

func TestPublicKeyHex(t *testing.T) {
	k, _ := keys.Generate(nil)
	pub, err := keys.ParsePublicKey(k.PublicHex())
	if err != nil || keys.PublicKeyHex(pub) != k.PublicHex() {
		t.Fatalf("round trip: %v", err)
	}
	for _, s := range []string{"", "zz", strings.Repeat("g", 64), strings.Repeat("ff", 32)} {
		if _, err := keys.ParsePublicKey(s); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", s)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	k, _ := keys.Generate(nil)
	path := filepath.Join(dir, "worker.key")
	if err := keys.Save(path, k); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", st.Mode().Perm())
	}
	got, err := keys.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.PublicHex() != k.PublicHex() {
		t.Error("loaded a different key")
	}
	if err := keys.Save(path, k); err == nil {
		t.Error("Save overwrote an existing key file")
	}
	tests := []struct {
		name string
		mode os.FileMode
	}{{"world readable", 0o604}, {"group readable", 0o640}, {"group writable", 0o620}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := keys.Load(path); !errors.Is(err, keys.ErrKeyFileMode) {
				t.Fatalf("Load with mode %04o: %v", tc.mode, err)
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	k, _ := keys.Generate(nil)
	var buf bytes.Buffer
	k.Write(&buf)
	good := buf.String()
	other, _ := keys.Generate(nil)
	tests := []struct{ name, body string }{
		{"empty", ""},
		{"not json", "nope"},
		{"wrong type", strings.Replace(good, keys.FileType, "other", 1)},
		{"wrong version", strings.Replace(good, `"version": 1`, `"version": 9`, 1)},
		{"mismatched public key", strings.Replace(good, k.PublicHex(), other.PublicHex(), 1)},
		{"unknown field", strings.Replace(good, "{", `{"extra": 1,`, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := keys.Read(strings.NewReader(tc.body)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
