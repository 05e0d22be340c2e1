package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
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

// Files come out 0644 and the folders made for them 0755 (CreateTemp alone
// would leave 0600, unreadable by the group that shares a run folder).
func TestModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "f.json")
	if err := WriteFile(p, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("file mode: got %v, %v; want 0644", st.Mode().Perm(), err)
	}
	if st, err := os.Stat(filepath.Join(dir, "a", "b")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("folder mode: got %v, %v; want 0755", st.Mode().Perm(), err)
	}
}
