package receipts_test

import (
	"bufio"
	"bytes"
	"os"
	"testing"

	"github.com/tollgate-ai/tollgate/receipts"
	"github.com/tollgate-ai/tollgate/zk"
)

// devVerifyingKeyFile is the cached capacity-8 development verifying key
// file (zk.TestKeyDir), the kind of file GET /v1/zk/keys/{id} serves.
func devVerifyingKeyFile(f *testing.F) []byte {
	f.Helper()
	dir := zk.TestKeyDir()
	if err := zk.EnsureDevKeys(dir, 8); err != nil {
		f.Fatal(err)
	}
	_, vkPath := zk.KeyFiles(dir, 8)
	b, err := os.ReadFile(vkPath)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzParseVerifyingKey: a verifying key is fetched from a gateway and may
// be hostile. Parsing refuses it or yields a key whose header is a vk for
// BN254 of a power-of-two capacity; it never panics. Seeded with the real
// dev key, its header alone and truncations.
func FuzzParseVerifyingKey(f *testing.F) {
	file := devVerifyingKeyFile(f)
	header, _, _ := bytes.Cut(file, []byte("\n"))
	f.Add(file)
	f.Add(append(header, '\n'))
	f.Add(file[:len(header)+1+(len(file)-len(header))/2])
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		vk, err := receipts.ParseVerifyingKey(b)
		if err != nil {
			return
		}
		h := vk.Header
		if h.Kind != "vk" || h.Capacity < 2 || h.Capacity&(h.Capacity-1) != 0 || vk.ID != receipts.KeyID(h, b) {
			t.Fatalf("accepted key with header %+v id %s", h, vk.ID)
		}
	})
}

// FuzzReadKeyHeader: the first line of a key file.
func FuzzReadKeyHeader(f *testing.F) {
	file := devVerifyingKeyFile(f)
	header, _, _ := bytes.Cut(file, []byte("\n"))
	f.Add(append(header, '\n'), "vk")
	f.Add(append(header, '\n'), "pk")
	f.Add([]byte(`{"kind":"vk","curve":"bn254","capacity":3}`+"\n"), "vk")
	f.Add([]byte("\n"), "vk")
	f.Fuzz(func(t *testing.T, line []byte, kind string) {
		h, err := receipts.ReadKeyHeader(bufio.NewReader(bytes.NewReader(line)), kind)
		if err != nil {
			return
		}
		if h.Kind != kind || h.Capacity < 2 || h.Capacity&(h.Capacity-1) != 0 || h.Gnark != receipts.GnarkVersion() {
			t.Fatalf("accepted header %+v for kind %q", h, kind)
		}
	})
}
