package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rella-project/rella/checkpoints"
	"github.com/rella-project/rella/internal/testenv"
)

// TestRellaMainProcess is not a test: with RELLA_MAIN_ARGS set (words
// separated by \x1f) it runs rella's main in this process, signals and all.
func TestRellaMainProcess(t *testing.T) {
	args := os.Getenv("RELLA_MAIN_ARGS")
	if args == "" {
		t.Skip("helper process for TestCtrlCInARealProcess")
	}
	os.Args = append([]string{"rella"}, strings.Split(args, "\x1f")...)
	main()
}

// A real `rella train` process gets SIGINT: it says at once that it will
// stop after the micro-batch; a second SIGINT aborts it (status 130) unless
// it had already saved its checkpoint and exited. Either way every
// checkpoint left is complete, and --resume ends with the adapter of a run
// that was never interrupted.
func TestCtrlCInARealProcess(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "run.yaml"), `
seed: 5
output_dir: `+dir+`/whole
generate: {data: true, data_users: 14, data_items: 40, model: true, tokenizer: `+tok+`, hidden: 16, layers: 1, heads: 2, kv_heads: 1, intermediate: 32}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3, max_eval_samples: 8}
model: {path: `+dir+`/model, batch_size: 8}
lora: {lora_r: 2, lora_alpha: 4}
training: {learning_rate: 1.0e-2, max_steps: 20, batch_size: 12, micro_batch_size: 4, save_steps: 1, eval_steps: 10}
retrieval: {train_samples: 40}
`)
	if code, _, stderr := rella(t, "train", cfg); code != 0 {
		t.Fatalf("uninterrupted train: exit %d\n%s", code, stderr)
	}
	cutDir := filepath.Join(dir, "cut")
	args := []string{"train", cfg, "output_dir=" + cutDir}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRellaMainProcess$")
	cmd.Env = append(os.Environ(), "RELLA_MAIN_ARGS="+strings.Join(args, "\x1f"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var errText bytes.Buffer
	notice := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			errText.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "stopping after the current micro-batch") {
				notice <- struct{}{}
			}
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(cutDir, "train", "checkpoint-2")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the run saved no checkpoint-2 within a minute")
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-notice:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("no notice after the first Ctrl-C")
	}
	cmd.Process.Signal(os.Interrupt)
	<-done
	err = cmd.Wait()
	mu.Lock()
	text := errText.String()
	mu.Unlock()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == 130:
		if !strings.Contains(text, "aborting now") {
			t.Errorf("exit 130 without saying so:\n%s", text)
		}
		t.Log("the second Ctrl-C aborted the run")
	case err == nil:
		if !strings.Contains(text, "a checkpoint was saved; resume with:") {
			t.Errorf("exit 0 after Ctrl-C without the resume command:\n%s", text)
		}
		t.Log("the run had saved its checkpoint and exited before the second Ctrl-C")
	default:
		t.Fatalf("interrupted run: %v\n%s", err, text)
	}
	if _, err := os.Stat(filepath.Join(cutDir, "train", "metrics.json")); err == nil {
		t.Fatal("the run finished anyway: the test interrupted nothing")
	}
	all, err := checkpoints.List(filepath.Join(cutDir, "train"))
	if err != nil || len(all) < 2 {
		t.Fatalf("checkpoints after the abort: %v %v", all, err)
	}
	for _, c := range all {
		if err := checkpoints.Verify(c.Dir); err != nil {
			t.Errorf("after the abort: %v", err)
		}
	}
	if code, _, stderr := rella(t, append(args, "--resume")...); code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, stderr)
	}
	a, err1 := os.ReadFile(filepath.Join(dir, "whole", "adapter", "adapter_model.safetensors"))
	b, err2 := os.ReadFile(filepath.Join(cutDir, "adapter", "adapter_model.safetensors"))
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		t.Errorf("the resumed adapter differs from the uninterrupted run's (%v %v)", err1, err2)
	}
}
