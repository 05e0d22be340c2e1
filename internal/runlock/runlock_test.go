package runlock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestHolderProcess is not a test: run with RUNLOCK_HOLD=DIR, it takes the
// lock on DIR, says "locked", and holds it until killed or stdin closes.
func TestHolderProcess(t *testing.T) {
	dir := os.Getenv("RUNLOCK_HOLD")
	if dir == "" {
		t.Skip("helper process for TestSecondWriterFailsNamingTheHolder")
	}
	l, err := Acquire(dir, "rella train -c 'my run.yaml' output_dir="+dir)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	l.Release()
	os.Exit(0)
}

// startHolder runs the test binary as a second process holding dir's lock.
func startHolder(t *testing.T, dir string) (*exec.Cmd, func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHolderProcess$")
	cmd.Env = append(os.Environ(), "RUNLOCK_HOLD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("holder process: %q %v", line, err)
	}
	return cmd, func() { stdin.Close() }
}

func TestSecondWriterFailsNamingTheHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	holder, closeStdin := startHolder(t, dir)

	_, err := Acquire(dir, "rella train -c other.yaml")
	if !errors.Is(err, ErrHeld) {
		closeStdin()
		holder.Wait()
		t.Fatalf("second writer: err %v, want ErrHeld", err)
	}
	for _, w := range []string{"pid " + strconv.Itoa(holder.Process.Pid), "rella train -c 'my run.yaml' output_dir=" + dir, dir} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}

	// The holder releases it on a normal exit; the next writer gets it.
	closeStdin()
	if err := holder.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	l, err := Acquire(dir, "rella score -c x.yaml")
	if err != nil {
		t.Fatalf("after the holder exited: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	if !strings.Contains(string(b), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(string(b), "command rella score -c x.yaml") {
		t.Errorf("lock file does not record this process: %q", b)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
}

// A holder that is killed (a crash) leaves the lock file behind, but the
// operating system has released the lock.
func TestCrashedHolderDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	holder, closeStdin := startHolder(t, dir)
	defer closeStdin()
	if _, err := Acquire(dir, "rella run x"); !errors.Is(err, ErrHeld) {
		t.Fatalf("while held: %v", err)
	}
	holder.Process.Kill()
	holder.Wait()
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	l, err := Acquire(dir, "rella run x")
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	l.Release()
}

// Within one process a second Acquire (another open file) is refused too,
// and works again after Release.
func TestReleaseLetsTheNextWriterIn(t *testing.T) {
	dir := t.TempDir()
	a, err := Acquire(dir, "first")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(dir, "second"); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "(first)") {
		t.Fatalf("second Acquire while held: %v", err)
	}
	a.Release()
	b, err := Acquire(dir, "second")
	if err != nil {
		t.Fatal(err)
	}
	b.Release()
}

func TestUnwritableFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes anywhere")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o555)
	defer os.Chmod(dir, 0o755)
	_, err := Acquire(filepath.Join(dir, "run"), "x")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "run")) {
		t.Fatalf("unwritable parent: %v", err)
	}
	_, err = Acquire(dir, "x")
	if err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("unwritable folder: %v", err)
	}
}
