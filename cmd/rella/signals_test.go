package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while the watcher writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The first signal says at once that the run stops after the current
// micro-batch and cancels the context (training then checkpoints); the
// second exits at once with the shell's status for the signal.
func TestFirstSignalStopsSecondAborts(t *testing.T) {
	for _, c := range []struct {
		sig  os.Signal
		code int
		hint string
	}{{os.Interrupt, 130, "Ctrl-C again aborts at once"}, {syscall.SIGTERM, 143, "again aborts at once"}} {
		sigs := make(chan os.Signal, 2)
		ctx, cancel := context.WithCancelCause(context.Background())
		var out syncBuffer
		exited := make(chan int, 1)
		go watchSignals(sigs, cancel, &out, func(code int) { exited <- code })

		sigs <- c.sig
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: the first signal did not cancel the context", c.sig)
		}
		msg := out.String()
		if !strings.Contains(msg, "stopping after the current micro-batch") || !strings.Contains(msg, "checkpoint") || !strings.Contains(msg, c.hint) {
			t.Errorf("%v: first-signal message %q does not say what happens next", c.sig, msg)
		}
		if cause := context.Cause(ctx); cause == nil || !strings.Contains(cause.Error(), "received") {
			t.Errorf("%v: cause %v", c.sig, cause)
		}
		select {
		case code := <-exited:
			t.Fatalf("%v: the first signal exited (%d)", c.sig, code)
		case <-time.After(50 * time.Millisecond):
		}

		sigs <- c.sig
		select {
		case code := <-exited:
			if code != c.code {
				t.Errorf("%v: second signal exit status %d, want %d", c.sig, code, c.code)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: the second signal did not abort", c.sig)
		}
		if !strings.Contains(out.String(), "aborting now") {
			t.Errorf("%v: second-signal message: %q", c.sig, out.String())
		}
	}
}
