// Package runlock gives one process at a time the right to write into a run's
// output folder. The lock is an flock(2) on OUTPUT_DIR/.rella.lock: the
// operating system releases it when the holder exits or crashes, so a stale
// lock file never blocks a later run. The file records the holder's pid and
// command line, which a refused writer reports.
package runlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FileName is the lock file's name inside the locked folder.
const FileName = ".rella.lock"

// ErrHeld is wrapped by Acquire's error when another process holds the lock.
var ErrHeld = errors.New("the output folder is in use by another rella process")

// Lock is a held lock; Release gives it back.
type Lock struct {
	f    *os.File
	path string
}

// Holder is what the lock file says about the process that holds it.
type Holder struct {
	PID     int
	Command string
	Since   string
}

// Acquire creates dir (mode 0755) when missing and takes its lock without
// waiting, recording the calling process's pid and command. When another
// process holds the lock the error wraps ErrHeld and names that process.
// Acquire also proves the folder is writable before any work starts.
func Acquire(dir, command string) (*Lock, error) {
	return AcquireFile(dir, FileName, command)
}

// ShardFileName is the lock file of one shard of a sharded run
// (.rella.lock.shard-00003-of-00008): N shards of one run write into the
// same output folder at once, each into its own shard folders, so each
// takes its own lock instead of the folder's; a second process running the
// same shard is refused. Commands that write the folder's shared files
// (merge, unsharded stages) take the folder lock.
func ShardFileName(index, count int) string {
	return fmt.Sprintf("%s.shard-%05d-of-%05d", FileName, index, count)
}

// AcquireFile is Acquire with the lock file dir/name.
func AcquireFile(dir, name, command string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output folder %s: %w", dir, err)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("output folder %s is not writable: %w", dir, err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if held {
		h := readHolder(path)
		f.Close()
		return nil, fmt.Errorf("%w: %s is locked by %s; wait for it to finish or stop it, or use another output_dir", ErrHeld, path, h)
	}
	rec := fmt.Sprintf("pid %d\nsince %s\ncommand %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339), oneLine(command))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(rec), 0)
	}
	if err != nil {
		unlock(f)
		f.Close()
		return nil, fmt.Errorf("output folder %s is not writable: %w", dir, err)
	}
	return &Lock{f: f, path: path}, nil
}

// Release empties the lock file and gives the lock back. The file itself
// stays: removing it would let two processes lock different files.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.f.Truncate(0)
	err := unlock(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// Path returns the lock file's path.
func (l *Lock) Path() string { return l.path }

// String names the holder for a person.
func (h Holder) String() string {
	if h.PID == 0 {
		return "another process (its pid is not recorded yet)"
	}
	s := "pid " + strconv.Itoa(h.PID)
	if h.Command != "" {
		s += " (" + h.Command + ")"
	}
	if h.Since != "" {
		s += " since " + h.Since
	}
	return s
}

// readHolder reads the holder's record; a holder that has just locked may
// not have written it yet, so an empty file is read again briefly.
func readHolder(path string) Holder {
	var h Holder
	for try := 0; try < 20; try++ {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			h = parseHolder(string(b))
			if h.PID != 0 {
				return h
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return h
}

func parseHolder(s string) Holder {
	var h Holder
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "pid":
			h.PID, _ = strconv.Atoi(v)
		case "command":
			h.Command = v
		case "since":
			h.Since = v
		}
	}
	return h
}

func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}
