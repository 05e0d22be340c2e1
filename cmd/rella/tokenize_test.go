package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

// tokenizeEnv runs "rella tokenize args..." with stdin and returns the exit
// code, stdout and stderr.
func tokenizeEnv(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	code := runMain(context.Background(), e, append([]string{"tokenize"}, args...))
	return code, out.String(), errb.String()
}

func TestTokenizeCommand(t *testing.T) {
	dir := testenv.Shared(t, "fixtures/tokenizer")
	data, err := os.ReadFile(filepath.Join(dir, "cases", "groundtruth.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Text   string `json:"text"`
		AddBOS bool   `json:"add_bos"`
		IDs    []int  `json:"ids"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	for _, bos := range []bool{false, true} {
		var in strings.Builder
		var want [][]int
		for _, c := range cases {
			if c.AddBOS != bos {
				continue
			}
			b, _ := json.Marshal(c.Text)
			in.Write(b)
			in.WriteByte('\n')
			want = append(want, c.IDs)
		}
		args := []string{"--tokenizer", filepath.Join(dir, "llama")}
		if bos {
			args = append(args, "--bos")
		}
		code, out, errs := tokenizeEnv(t, in.String(), args...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != len(want) {
			t.Fatalf("bos %v: %d output lines, want %d", bos, len(lines), len(want))
		}
		for i, l := range lines {
			var got []int
			if err := json.Unmarshal([]byte(l), &got); err != nil {
				t.Fatalf("line %d %q: %v", i+1, l, err)
			}
			if !slices.Equal(got, want[i]) && !(len(got) == 0 && len(want[i]) == 0) {
				t.Errorf("bos %v line %d: got %v want %v", bos, i+1, got, want[i])
			}
		}
	}
}

func TestTokenizeCommandErrors(t *testing.T) {
	dir := testenv.Shared(t, "fixtures/tokenizer/llama")
	code, out, errs := tokenizeEnv(t, "\"Hello\"\nnot json\n\"x\"\n", "--tokenizer", dir)
	if code != 1 || !strings.Contains(errs, "line 2") {
		t.Errorf("bad line: exit %d, stderr %q", code, errs)
	}
	if out != "[15043]\n" {
		t.Errorf("output before the bad line: %q", out)
	}
	if code, _, errs := tokenizeEnv(t, "\"a\"\nnull\n", "--tokenizer", dir); code != 1 || !strings.Contains(errs, "line 2: not a JSON string") {
		t.Errorf("null line: exit %d, stderr %q", code, errs)
	}
	if code, _, errs := tokenizeEnv(t, "", "--bos"); code != 2 || !strings.Contains(errs, "--tokenizer is required") {
		t.Errorf("missing flag: exit %d, stderr %q", code, errs)
	}
	missing := filepath.Join(t.TempDir(), "tokenizer.model")
	if code, _, errs := tokenizeEnv(t, "", "--tokenizer", missing); code != 1 || !strings.Contains(errs, missing) {
		t.Errorf("missing file: exit %d, stderr %q", code, errs)
	}
}
