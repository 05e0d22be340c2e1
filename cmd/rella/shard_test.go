package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/runlock"
)

// rellaEnv runs rella with the launcher variables vars (and no others).
func rellaEnv(t *testing.T, vars map[string]string, args ...string) (code int, stdout, stderr, log string) {
	t.Helper()
	var out, errb, logb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(&logb, nil)),
		lookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
	code = runMain(context.Background(), e, args)
	return code, out.String(), errb.String(), logb.String()
}

// issue 14: item embeddings in explicit shards, then scoring as a Slurm
// array (--shard auto from SLURM_ARRAY_TASK_ID/COUNT, tasks finishing out of
// order), then `rella merge`: the predictions of both variants equal the
// unsharded run's byte for byte. A shard runs while another process holds
// the folder lock; a second process on the same shard is refused.
func TestShardedScoreAndMergeCommands(t *testing.T) {
	// Byte-identity needs a GEMM whose rows do not depend on the batch they
	// share: gonum's (a BLAS library's, like cuBLAS', may differ in the last bits).
	t.Setenv("RELLA_BLAS", "none")
	dir := t.TempDir()
	whole := tinyConfig(t, dir, "whole", "prepare, score")
	if code, _, stderr, _ := rellaLog(t, "score", whole); code != 0 {
		t.Fatalf("unsharded score: exit %d\n%s", code, stderr)
	}
	cfg := tinyConfig(t, dir, "sharded", "prepare, score")
	out := filepath.Join(dir, "sharded")
	if code, _, stderr, _ := rellaEnv(t, nil, "score", cfg, "--shard", "0/3"); code == 0 || !strings.Contains(stderr, "rella embed") {
		t.Errorf("sharded SUBR scoring without embeddings: exit %d, want an error naming rella embed:\n%s", code, stderr)
	}
	for _, s := range []string{"1/2", "0/2"} {
		if code, _, stderr, _ := rellaEnv(t, nil, "embed", cfg, "--shard", s); code != 0 {
			t.Fatalf("embed --shard %s: exit %d\n%s", s, code, stderr)
		}
	}
	if code, stdout, stderr, _ := rellaEnv(t, nil, "merge", cfg); code != 0 || !strings.Contains(stdout, "merged the item embeddings") {
		t.Fatalf("merge of the embeddings: exit %d\n%s%s", code, stdout, stderr)
	}
	folder, err := runlock.Acquire(out, "another rella")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{2, 0} {
		vars := map[string]string{"SLURM_ARRAY_TASK_ID": strconv.Itoa(id), "SLURM_ARRAY_TASK_COUNT": "3"}
		if code, _, stderr, log := rellaEnv(t, vars, "score", cfg, "--shard", "auto"); code != 0 || !strings.Contains(log, "SLURM_ARRAY_TASK_ID="+strconv.Itoa(id)) {
			t.Fatalf("score task %d: exit %d\n%s\n%s", id, code, stderr, log)
		}
	}
	folder.Release()
	if code, _, stderr, _ := rellaEnv(t, nil, "merge", cfg); code != 0 && !strings.Contains(stderr, "missing 1/3") {
		t.Errorf("merge with task 1 missing: exit %d\n%s", code, stderr)
	} else if code == 0 {
		t.Errorf("merge with task 1 missing exited 0")
	}
	held, err := runlock.AcquireFile(out, runlock.ShardFileName(1, 3), "another rella")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr, _ := rellaEnv(t, nil, "score", cfg, "--shard", "1/3"); code == 0 || !strings.Contains(stderr, "in use") {
		t.Errorf("a second process on shard 1/3: exit %d\n%s", code, stderr)
	}
	held.Release()
	vars := map[string]string{"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2"}
	if code, _, stderr, _ := rellaEnv(t, vars, "score", cfg, "--shard", "auto"); code != 0 {
		t.Fatalf("score task 1: exit %d\n%s", code, stderr)
	}
	if code, _, stderr, _ := rellaEnv(t, nil, "merge", cfg); code != 0 {
		t.Fatalf("merge: exit %d\n%s", code, stderr)
	}
	for _, v := range []string{"test-recency", "test-subr"} {
		want, err := os.ReadFile(filepath.Join(dir, "whole", "score", v, "predictions.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, "score", v, "predictions.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, got) {
			t.Errorf("%s: merged predictions differ from the unsharded run's", v)
		}
		wm := readJSONFile(t, filepath.Join(dir, "whole", "score", v, "metrics.json"))
		gm := readJSONFile(t, filepath.Join(out, "score", v, "metrics.json"))
		for _, k := range []string{"auc", "logloss", "acc", "n", "fingerprint"} {
			if wm[k] != gm[k] {
				t.Errorf("%s metrics.json %s: merged %v, unsharded %v", v, k, gm[k], wm[k])
			}
		}
	}
}

// Flag mistakes are usage errors.
func TestShardFlagErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyConfig(t, dir, "x", "prepare")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"score", cfg, "--shard", "3/3"}, "out of range"},
		{[]string{"score", cfg, "--shard", "1/3", "--shards", "3"}, "--shards only applies"},
		{[]string{"score", cfg, "--shards", "3"}, "--shards only applies"},
		{[]string{"embed", cfg, "--shard", "auto"}, "no launcher variables"},
	} {
		code, _, stderr, _ := rellaEnv(t, nil, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, want an error containing %q:\n%s", c.args, code, c.want, stderr)
		}
	}
}
