package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

// rella runs the command line args and returns the exit code, stdout and stderr.
func rella(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	code := runMain(context.Background(), e, args)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want []string
	}{
		{nil, 2, []string{"usage: rella COMMAND"}},
		{[]string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{[]string{"prepare"}, 2, []string{"-c CONFIG is required", "usage: rella prepare CONFIG|-c CONFIG"}},
		{[]string{"prompts", "-c", "quickstart", "--split", "dev"}, 2, []string{"--split must be train, valid or test", "usage: rella prompts"}},
		{[]string{"prepare", "-c", "quickstart", "--bogus"}, 2, []string{"flag provided but not defined: -bogus"}},
		{[]string{"prepare", "-c", "quickstart", "stray"}, 2, []string{`unexpected argument "stray"`}},
		{[]string{"prepare", "-c", "quickstart", "data.histry_len=3"}, 1, []string{"unknown key data.histry_len", "did you mean data.history_len"}},
		{[]string{"prepare", "-c", "/nonexistent/run.yaml"}, 1, []string{"/nonexistent/run.yaml"}},
	}
	for _, c := range cases {
		code, _, stderr := rella(t, c.args...)
		if code != c.code {
			t.Errorf("rella %v: exit %d, want %d (stderr %q)", c.args, code, c.code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("rella %v: stderr %q lacks %q", c.args, stderr, w)
			}
		}
	}
}

// The ML-1M counts of the shared ratings (users 1-2999) and the released
// demo prompts, through the command line as a user runs it.
func TestPrepareAndPromptsOnRealML1M(t *testing.T) {
	dir := testenv.Shared(t, "data/ml-1m")
	demo := testenv.Shared(t, "data/rella-demo/test_5_simple.json")
	out := t.TempDir()
	cfg := writeFile(t, filepath.Join(out, "run.yaml"), "output_dir: "+out+"\ndata:\n  dataset: ml-1m\n  dir: "+dir+"\n  history_len: 5\n")
	if code, _, stderr := rella(t, "prepare", "-c", cfg); code != 0 {
		t.Fatalf("prepare: exit %d: %s", code, stderr)
	}
	var stats map[string]int
	b, err := os.ReadFile(filepath.Join(out, "data", "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &stats)
	if stats["train"] != 378124 || stats["valid"] != 47265 || stats["test"] != 47266 || stats["users"] != 2999 {
		t.Errorf("stats: got %v, want train 378124 valid 47265 test 47266 users 2999", stats)
	}

	// With only part of the ratings the global time split differs from the
	// authors', so the demo's test samples can fall in any split here.
	type pair struct{ Input, Output string }
	got := map[pair]bool{}
	for split, want := range map[string]int{"train": 378124, "valid": 47265, "test": 47266} {
		code, stdout, stderr := rella(t, "prompts", "-c", cfg, "--split", split)
		if code != 0 {
			t.Fatalf("prompts: exit %d: %s", code, stderr)
		}
		n := 0
		sc := bufio.NewScanner(strings.NewReader(stdout))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var p struct {
				Input  string `json:"input"`
				Output string `json:"output"`
			}
			if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
				t.Fatalf("%s line %d is not JSON: %v", split, n+1, err)
			}
			got[pair{p.Input, p.Output}] = true
			n++
		}
		if n != want {
			t.Errorf("prompts --split %s: %d lines, want %d", split, n, want)
		}
	}
	var want []struct {
		Input  string `json:"input"`
		Output string `json:"output"`
	}
	b, _ = os.ReadFile(demo)
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, w := range want {
		if got[pair{w.Input, w.Output}] {
			found++
		}
	}
	// 15 of the 17 demo test prompts belong to users 1-2999, whose ratings
	// are in the shared file; the other 2 users' ratings are not.
	if found != 15 {
		t.Errorf("demo test prompts reproduced byte for byte: %d, want 15 of %d", found, len(want))
	}

	code, stdout, _ := rella(t, "prompts", "-c", cfg, "--split", "train", "--limit", "3")
	if code != 0 || strings.Count(stdout, "\n") != 3 {
		t.Errorf("--limit 3: exit %d, %d lines", code, strings.Count(stdout, "\n"))
	}
}
