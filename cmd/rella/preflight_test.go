package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/internal/runlock"
)

// While another rella holds OUTPUT_DIR's lock, every command that writes
// there fails at once naming the holder's pid and command, and writes
// nothing; once the holder is gone they run.
func TestSecondWriterIsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyPrepareConfig(t, dir)
	out := filepath.Join(dir, "out")
	holder, err := runlock.Acquire(out, "rella train -c other.yaml output_dir="+out)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"prepare", cfg}, {"embed", cfg}, {"retrieve", cfg}, {"score", cfg}, {"train", cfg},
		{"run", cfg}, {"study", cfg, "--param", "K", "--values", "1,2"}, {"prompts", cfg, "--split", "test"},
	} {
		code, _, stderr := rella(t, args...)
		if code != 1 || !strings.Contains(stderr, "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(stderr, "rella train -c other.yaml") {
			t.Errorf("rella %q while the folder is locked: exit %d, stderr %q; want a refusal naming the holder", args, code, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "source")); err == nil {
		t.Errorf("a refused command generated data anyway")
	}
	if _, err := os.Stat(filepath.Join(out, "data")); err == nil {
		t.Errorf("a refused command wrote into the locked folder")
	}
	holder.Release()
	if code, _, stderr := rella(t, "prepare", cfg); code != 0 {
		t.Fatalf("after the holder left: exit %d: %s", code, stderr)
	}
	// the command released the lock when it ended
	l, err := runlock.Acquire(out, "test")
	if err != nil {
		t.Fatalf("the lock outlived the command: %v", err)
	}
	l.Release()
}

// Problems with the output folder, the model, the tokenizer or the device
// are reported before any data is read (the data folder here does not even
// exist, and would be the error otherwise).
func TestFailEarlyBeforeLoadingData(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model")
	writeFile(t, filepath.Join(model, "config.json"), "{}")
	noTok := filepath.Join(dir, "model-without-tokenizer")
	writeFile(t, filepath.Join(noTok, "config.json"), "{}")
	cfg := writeFile(t, filepath.Join(dir, "run.yaml"), "output_dir: "+dir+"/out\ndata: {dataset: ml-1m, dir: "+dir+"/no-such-data}\nmodel: {path: "+model+", tokenizer: "+dir+"/no-such-tokenizer}\n")
	readonly := filepath.Join(dir, "readonly")
	os.Mkdir(readonly, 0o555)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"score", cfg}, "model.tokenizer: no tokenizer at " + dir + "/no-such-tokenizer"},
		{[]string{"score", cfg, "model.path=" + dir + "/no-such-model"}, "model.path: " + dir + "/no-such-model is not a model folder"},
		{[]string{"train", cfg, "model.path=" + noTok, "model.tokenizer="}, "model.path: " + noTok + ": no tokenizer.model or tokenizer.json"},
		{[]string{"embed", cfg, "model.adapter=" + dir + "/no-adapter"}, "model.adapter: " + dir + "/no-adapter holds no PEFT adapter"},
		{[]string{"run", cfg, "stages=[prepare,score]", "model.path=" + dir + "/none"}, "model.path: " + dir + "/none is not a model folder"},
	}
	if os.Geteuid() != 0 {
		cases = append(cases, struct {
			args []string
			want string
		}{[]string{"prepare", cfg, "output_dir=" + readonly + "/out"}, "output_dir: output folder " + readonly + "/out"})
	}
	if !cuda.Enabled {
		cases = append(cases, struct {
			args []string
			want string
		}{[]string{"score", cfg, "model.device=gpu", "model.dtype=bf16"}, "model.device=gpu: rella was built without GPU support"})
	}
	for _, c := range cases {
		code, _, stderr := rella(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("rella %q: exit %d, stderr %q; want %q", c.args, code, stderr, c.want)
		}
		if strings.Contains(stderr, "no-such-data") {
			t.Errorf("rella %q read the data before checking: %q", c.args, stderr)
		}
	}
	// prepare needs no model: it gets as far as the (missing) data
	if code, _, stderr := rella(t, "prepare", cfg); code != 1 || !strings.Contains(stderr, "no-such-data") {
		t.Errorf("prepare: exit %d, %q", code, stderr)
	}
}
