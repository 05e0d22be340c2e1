// Package testenv locates the project's shared test data (../shared beside the
// repository root) and skips tests cleanly when it is absent.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot returns the directory holding go.mod, searching upward from the
// working directory of the test.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("testenv: getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("testenv: no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Shared returns the path of rel inside ../shared (next to the repository
// root, or $RELLA_SHARED when set), and skips the test when it does not exist.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	base := os.Getenv("RELLA_SHARED")
	if base == "" {
		base = filepath.Join(filepath.Dir(RepoRoot(t)), "shared")
	}
	p := filepath.Join(base, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared test data %s is absent (%v): put the project's shared/ folder beside the repository or set RELLA_SHARED", p, err)
	}
	return p
}
