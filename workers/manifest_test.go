package workers_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-ai/tollgate/workers"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestManifestDigest(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"b.bin": "bb", "a/config.json": "{}", ".hidden": "h"})
	want := workers.ManifestHeader + "\n" +
		sha("h") + " 1 .hidden\n" +
		sha("{}") + " 2 a/config.json\n" +
		sha("bb") + " 2 b.bin\n"
	m, err := workers.Manifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m != want {
		t.Fatalf("manifest:\n%s\nwant:\n%s", m, want)
	}
	d, err := workers.ManifestDigest(dir)
	if err != nil || d != sha(want) {
		t.Fatalf("digest %s, %v; want %s", d, err, sha(want))
	}

	// A single file's digest is its plain SHA-256.
	if d, err := workers.ManifestDigest(filepath.Join(dir, "b.bin")); err != nil || d != sha("bb") {
		t.Errorf("single file digest %s, %v", d, err)
	}

	// Any change of content, name or set changes the digest.
	changes := []struct {
		name string
		do   func(dir string)
	}{
		{"content", func(dir string) { os.WriteFile(filepath.Join(dir, "b.bin"), []byte("bc"), 0o644) }},
		{"rename", func(dir string) { os.Rename(filepath.Join(dir, "b.bin"), filepath.Join(dir, "c.bin")) }},
		{"new file", func(dir string) { os.WriteFile(filepath.Join(dir, "extra"), nil, 0o644) }},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			dir2 := t.TempDir()
			writeFiles(t, dir2, map[string]string{"b.bin": "bb", "a/config.json": "{}", ".hidden": "h"})
			c.do(dir2)
			if d2, _ := workers.ManifestDigest(dir2); d2 == d {
				t.Error("digest unchanged")
			}
		})
	}
}

func TestManifestSymlinks(t *testing.T) {
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{"secret": "s"})
	tests := []struct {
		name    string
		link    func(dir string) error
		wantErr bool
	}{
		{"link to file inside", func(dir string) error { return os.Symlink("w.bin", filepath.Join(dir, "alias.bin")) }, false},
		{"link escaping", func(dir string) error {
			return os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "x"))
		}, true},
		{"relative link escaping", func(dir string) error { return os.Symlink("../../etc/passwd", filepath.Join(dir, "x")) }, true},
		{"link to directory", func(dir string) error { return os.Symlink(outside, filepath.Join(dir, "d")) }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"w.bin": "w"})
			if err := tc.link(dir); err != nil {
				t.Fatal(err)
			}
			_, err := workers.ManifestDigest(dir)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}
