// Package secretmount writes files the way the kubelet updates a mounted
// Secret, for tests of code that follows a rotated secret file. It imports
// nothing of this module, so any package's own tests can use it.
package secretmount

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// Write replaces the files of dir the way the kubelet updates a
// mounted Secret (pkg/volume/util/atomic_writer.go): the files go into a
// new hidden directory, a symlink ..data_tmp to it is renamed over ..data
// (atomic), each visible name is a symlink through ..data, and the
// previous directory is removed. It returns the path of each file.
func Write(t testing.TB, dir string, files map[string]string) map[string]string {
	t.Helper()
	data := filepath.Join(dir, "..data")
	old, err := os.Readlink(data)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	ts, err := os.MkdirTemp(dir, "..2026_01_02_15_04_05.")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); errors.Is(err, fs.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
		paths[name] = link
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, data); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}
