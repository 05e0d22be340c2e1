package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rella-project/rella/internal/testenv"
)

// SIGTERM in the middle of `rella train` (the command's context is the one
// the first signal cancels) saves a checkpoint and exits 0 printing the
// command that resumes it: the whole command line, overrides included,
// quoted for a shell. Running exactly that line (split by sh) ends with the
// same adapter, bit for bit, as a run that was never interrupted.
func TestTrainInterruptAndResumeIsExact(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	dir := t.TempDir()
	config := func(name string) string {
		return writeFile(t, filepath.Join(dir, name+".yaml"), `
seed: 3
output_dir: `+dir+`/`+name+`
generate: {data: true, data_users: 14, data_items: 40, model: true, tokenizer: `+tok+`, hidden: 16, layers: 1, heads: 2, kv_heads: 1, intermediate: 32}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3, max_eval_samples: 8}
model: {path: `+dir+`/model, batch_size: 8}
lora: {lora_r: 2, lora_alpha: 4, lora_dropout: 0.1}
training: {learning_rate: 1.0e-2, max_steps: 30, batch_size: 12, micro_batch_size: 4, save_steps: 1, eval_steps: 10}
retrieval: {train_samples: 40}
`)
	}
	if code, _, stderr := rella(t, "train", "-c", config("whole")); code != 0 {
		t.Fatalf("uninterrupted train: exit %d\n%s", code, stderr)
	}

	// The config's own output_dir is a decoy: the run goes where the
	// override says (a folder with a space and a quote in its name), so a
	// resume command that dropped the overrides would resume nothing.
	cut := config("cut-preset")
	cutDir := filepath.Join(dir, "cut it's")
	cutArgs := []string{"train", "-c", cut, "output_dir=" + cutDir, "training.eval_steps=10"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // "SIGTERM" once the run has saved its third checkpoint
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(cutDir, "train", "checkpoint-3")); err == nil {
				cancel()
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if code := runMain(ctx, e, cutArgs); code != 0 {
		t.Fatalf("interrupted train: exit %d, want 0\n%s", code, errb.String())
	}
	_, line, ok := strings.Cut(errb.String(), "resume with: ")
	if !ok {
		t.Fatalf("interrupted train did not say how to resume:\n%s", errb.String())
	}
	line, _, _ = strings.Cut(line, "\n")
	words := shellWords(t, line)
	if want := append([]string{"rella"}, append(cutArgs, "--resume")...); !slices.Equal(words, want) {
		t.Fatalf("resume command %s\nsplits into %q,\nwant %q", line, words, want)
	}
	if _, err := os.Stat(filepath.Join(cutDir, "train", "test-recency", "metrics.json")); err == nil {
		t.Fatal("the interrupted run finished anyway: the test interrupted nothing")
	}
	if code, _, stderr := rella(t, words[1:]...); code != 0 {
		t.Fatalf("resumed train: exit %d\n%s", code, stderr)
	}
	for _, f := range []string{"adapter/adapter_model.safetensors", "train/final/adapter_model.safetensors", "train/test-recency/predictions.jsonl"} {
		a, err1 := os.ReadFile(filepath.Join(dir, "whole", f))
		b, err2 := os.ReadFile(filepath.Join(cutDir, f))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", f, err1, err2)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between the uninterrupted and the interrupted+resumed run", f)
		}
	}

	// A fresh run over an earlier one is refused with the whole command
	// that continues it.
	code, _, stderr := rella(t, cutArgs...)
	_, line, ok = strings.Cut(stderr, "continue it with: ")
	line, _, _ = strings.Cut(line, " (or remove")
	if code == 0 || !ok {
		t.Fatalf("fresh run over an earlier one: exit %d, stderr %q", code, stderr)
	}
	if got, want := shellWords(t, line), append([]string{"rella"}, append(cutArgs, "--resume")...); !slices.Equal(got, want) {
		t.Errorf("continue command %s\nsplits into %q, want %q", line, got, want)
	}

	// Resuming with a setting that changes the run is refused, naming it,
	// unless forced.
	code, _, stderr = rella(t, append(cutArgs, "--resume", "training.learning_rate=0.5")...)
	if code == 0 || !strings.Contains(stderr, "learning_rate") {
		t.Errorf("resume with another learning rate: exit %d, stderr %q; want a refusal naming learning_rate", code, stderr)
	}
	if code, _, stderr := rella(t, append(cutArgs, "--resume", "--force", "training.learning_rate=0.5")...); code != 0 {
		t.Errorf("forced resume: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "cut-preset")); err == nil {
		t.Errorf("the config's own output_dir was written, though every command overrode it")
	}
}
