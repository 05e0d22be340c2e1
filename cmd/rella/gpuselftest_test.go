//go:build !rellagpu

package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestGPUSelftestWithoutGPUSupport(t *testing.T) {
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if code := runMain(context.Background(), e, []string{"gpu-selftest"}); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if want := "build it with scripts/build-gpu.sh"; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q does not say %q", errb.String(), want)
	}
}
