package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestFailedWriteKeepsOldContentAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	if err := WriteFile(p, []byte("old")); err != nil {
		t.Fatal(err)
	}
	err := Write(p, func(w io.Writer) error {
		w.Write([]byte("half"))
		return errors.New("disk on fire")
	})
	if err == nil {
		t.Fatal("want the fill error")
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("content: got %q, want old", b)
	}
	if e, _ := os.ReadDir(dir); len(e) != 1 {
		t.Errorf("folder holds %d entries, want 1 (no temporary left)", len(e))
	}
	if err := WriteFile(filepath.Join(dir, "sub", "new"), []byte("x")); err != nil {
		t.Errorf("write into a missing folder: %v", err)
	}
}
