package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

// `rella logits` on the stories260K fixture reproduces llama2.c's logits.
func TestLogitsCommandMatchesLlama2c(t *testing.T) {
	dir := testenv.Shared(t, "fixtures/stories260K")
	b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Sequences []struct {
			Tokens     []int     `json:"tokens"`
			Argmax     []int     `json:"argmax"`
			Margin     []float64 `json:"argmax_margin"`
			LogitsLast []float64 `json:"logits_last"`
		} `json:"sequences"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, s := range ref.Sequences {
		if len(s.Tokens) < 2 || len(s.Tokens) > 64 {
			continue // the engine tests cover the long ones
		}
		ids := make([]string, len(s.Tokens))
		for i, id := range s.Tokens {
			ids[i] = strconv.Itoa(id)
		}
		code, stdout, stderr := rella(t, "logits", "--model", dir, "--tokens", strings.Join(ids, ","))
		if code != 0 {
			t.Fatalf("logits: exit %d: %s", code, stderr)
		}
		var got struct {
			Last   []float64 `json:"last"`
			Argmax []int     `json:"argmax"`
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("output is not JSON: %v", err)
		}
		if len(got.Last) != len(s.LogitsLast) || len(got.Argmax) != len(s.Tokens) {
			t.Fatalf("got %d logits and %d argmax, want %d and %d", len(got.Last), len(got.Argmax), len(s.LogitsLast), len(s.Tokens))
		}
		for i := range got.Last {
			if math.Abs(got.Last[i]-s.LogitsLast[i]) > 1e-4 {
				t.Fatalf("logit %d: got %v, want %v", i, got.Last[i], s.LogitsLast[i])
			}
		}
		for i := range got.Argmax {
			if s.Margin[i] > 1e-3 && got.Argmax[i] != s.Argmax[i] {
				t.Errorf("argmax at %d: got %d, want %d", i, got.Argmax[i], s.Argmax[i])
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no reference sequence of 2-64 tokens to check")
	}
	if code, _, stderr := rella(t, "logits", "--model", dir, "--tokens", "1,x"); code != 2 || !strings.Contains(stderr, "tokens") {
		t.Errorf("bad --tokens: exit %d, stderr %q", code, stderr)
	}
}

// `rella init-model` writes a checkpoint that loads and runs, with the
// tokenizer copied beside it; it refuses to overwrite a model.
func TestInitModelCommand(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	out := filepath.Join(t.TempDir(), "m")
	code, _, stderr := rella(t, "init-model", "--out", out, "--tokenizer", tok, "--hidden", "16", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--intermediate", "24", "--dtype", "bf16")
	if code != 0 {
		t.Fatalf("init-model: exit %d: %s", code, stderr)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.model"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	code, stdout, stderr := rella(t, "logits", "--model", out, "--tokens", "1,3869")
	if code != 0 {
		t.Fatalf("logits on the new model: exit %d: %s", code, stderr)
	}
	var got struct{ Last []float64 }
	json.Unmarshal([]byte(stdout), &got)
	if len(got.Last) != 32000 {
		t.Errorf("logits: %d, want 32000 (the tokenizer's vocabulary)", len(got.Last))
	}
	if code, _, _ := rella(t, "init-model", "--out", out); code == 0 {
		t.Error("init-model overwrote an existing model")
	}
}
