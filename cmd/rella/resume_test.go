package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rella-project/rella/internal/testenv"
)

// SIGTERM in the middle of `rella train` (the command's context is the one
// signal.NotifyContext cancels) saves a checkpoint and exits 0 saying how to
// resume; `rella train --resume` then ends with the same adapter, bit for
// bit, as a run that was never interrupted.
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

	cut := config("cut")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // "SIGTERM" once the run has saved its third checkpoint
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(dir, "cut", "train", "checkpoint-3")); err == nil {
				cancel()
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if code := runMain(ctx, e, []string{"train", "-c", cut}); code != 0 {
		t.Fatalf("interrupted train: exit %d, want 0\n%s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "resume with: rella train -c "+cut+" --resume") {
		t.Fatalf("interrupted train did not say how to resume:\n%s", errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "cut", "train", "test-recency", "metrics.json")); err == nil {
		t.Fatal("the interrupted run finished anyway: the test interrupted nothing")
	}
	if code, _, stderr := rella(t, "train", "-c", cut, "--resume"); code != 0 {
		t.Fatalf("resumed train: exit %d\n%s", code, stderr)
	}
	for _, f := range []string{"adapter/adapter_model.safetensors", "train/final/adapter_model.safetensors", "train/test-recency/predictions.jsonl"} {
		a, err1 := os.ReadFile(filepath.Join(dir, "whole", f))
		b, err2 := os.ReadFile(filepath.Join(dir, "cut", f))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", f, err1, err2)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between the uninterrupted and the interrupted+resumed run", f)
		}
	}

	// A fresh run over an earlier one is refused with the command that continues it.
	code, _, stderr := rella(t, "train", "-c", cut)
	if code == 0 || !strings.Contains(stderr, "continue it with: rella train -c "+cut+" --resume") {
		t.Errorf("fresh run over an earlier one: exit %d, stderr %q", code, stderr)
	}

	// Resuming with a setting that changes the run is refused, naming it,
	// unless forced.
	code, _, stderr = rella(t, "train", "-c", cut, "--resume", "training.learning_rate=0.5")
	if code == 0 || !strings.Contains(stderr, "learning_rate") {
		t.Errorf("resume with another learning rate: exit %d, stderr %q; want a refusal naming learning_rate", code, stderr)
	}
	if code, _, stderr := rella(t, "train", "-c", cut, "--resume", "--force", "training.learning_rate=0.5"); code != 0 {
		t.Errorf("forced resume: exit %d: %s", code, stderr)
	}
}
