package workers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ManifestHeader is the first line of a version-1 weights manifest.
const ManifestHeader = "tollgate-manifest-v1"

// ManifestDigest is the weights digest of a model: lowercase hex SHA-256.
//
// For a single regular file (a GGUF, a llama2.c checkpoint) it is the
// SHA-256 of the file's bytes, what `sha256sum FILE` prints.
//
// For a directory it is the SHA-256 of its manifest, the text
//
//	tollgate-manifest-v1\n
//	<sha256 hex> <size in bytes> <relative path>\n   (one line per file)
//
// listing every regular file under the directory, hidden ones included, by
// its slash-separated path relative to the directory, sorted by path bytes.
// A symbolic link to a regular file inside the directory is listed under the
// link's path with the target's contents; a link that escapes the directory,
// a link to a directory, a path containing a newline, or any file that is
// neither regular nor a directory is an error, so the digest always names
// exactly the bytes that would be loaded.
func ManifestDigest(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	if st.Mode().IsRegular() {
		sum, _, err := hashFile(path)
		return sum, err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("manifest: %s is neither a regular file nor a directory", path)
	}
	m, err := Manifest(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(m))
	return hex.EncodeToString(sum[:]), nil
}

// Manifest renders a directory's version-1 manifest (see ManifestDigest).
func Manifest(dir string) (string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	type entry struct {
		rel, sum string
		size     int64
	}
	var entries []entry
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.ContainsAny(rel, "\n\r") {
			return fmt.Errorf("%q: path contains a newline", rel)
		}
		mode := d.Type()
		switch {
		case d.IsDir():
			return nil
		case mode&fs.ModeSymlink != 0:
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if inside, err := filepath.Rel(root, target); err != nil || inside == ".." || strings.HasPrefix(inside, ".."+string(filepath.Separator)) {
				return fmt.Errorf("%s: symbolic link escapes the model directory", rel)
			}
			st, err := os.Stat(target)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("%s: symbolic link to something other than a regular file", rel)
			}
		case !mode.IsRegular():
			return fmt.Errorf("%s: not a regular file", rel)
		}
		sum, size, err := hashFile(p)
		if err != nil {
			return err
		}
		entries = append(entries, entry{rel, sum, size})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].rel < entries[j].rel })
	var sb strings.Builder
	sb.WriteString(ManifestHeader + "\n")
	for _, e := range entries {
		fmt.Fprintf(&sb, "%s %d %s\n", e.sum, e.size, e.rel)
	}
	return sb.String(), nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
