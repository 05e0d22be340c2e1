package pipeline

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/shard"
)

// shardFixture is a runner on a generated dataset and random model in
// dir/out (data and model shared by every runner of the test).
func shardFixture(t *testing.T, dir, out string, sp *shard.Spec) *Runner {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	r := testRunner(t, filepath.Join(dir, out), io.Discard)
	c := r.Cfg
	c.Generate = configs.Generate{Data: true, DataUsers: 40, DataItems: 300, Model: true, Tokenizer: tok, Hidden: 16, Layers: 1, Heads: 2, KVHeads: 1, FFN: 32, InitStd: 0.02}
	c.Data.Dir, c.Model.Path = filepath.Join(dir, "source"), filepath.Join(dir, "model")
	c.Data.HistoryLen = 3
	c.Data.MaxEvalSamples = 37
	c.Model.BatchSize = 4
	c.Retrieval.BatchSize = 16
	r.Shard = sp
	return r
}

var timeLine = regexp.MustCompile(`(?m)^  "(time|commit)": .*$`)

// issue 14: shards scored out of order (2, 0, 1 of 3) and merged give the
// unsharded run's predictions.jsonl byte for byte and its metrics.json but
// for the time; a rerun skips a finished shard.
func TestShardedScoringMergesToTheUnshardedRun(t *testing.T) {
	// Byte-identity needs a GEMM whose rows do not depend on the batch they
	// share: gonum's (a BLAS library's, like cuBLAS', may differ in the last bits).
	t.Setenv("RELLA_BLAS", "none")
	dir := t.TempDir()
	ctx := context.Background()
	whole := shardFixture(t, dir, "whole", nil)
	ds, err := whole.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := whole.Score(ctx, ds, "test", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 0, 1} {
		r := shardFixture(t, dir, "sharded", &shard.Spec{Index: i, Count: 3})
		if _, err := r.Score(ctx, ds, "test", false); err != nil {
			t.Fatalf("shard %d/3: %v", i, err)
		}
	}
	var log bytes.Buffer
	again := shardFixture(t, dir, "sharded", &shard.Spec{Index: 1, Count: 3})
	again.Log = slogTo(&log)
	res, err := again.Score(ctx, ds, "test", false)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Reused || !strings.Contains(log.String(), "shard already finished, skipped") {
		t.Errorf("the rerun of a finished shard was not skipped: %+v\n%s", res[0], log.String())
	}
	m := shardFixture(t, dir, "sharded", nil)
	got, err := m.MergeScores(ctx, ds, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("merged %d variants, the unsharded run has %d", len(got), len(want))
	}
	for k := range want {
		wp, _ := os.ReadFile(filepath.Join(want[k].Dir, PredictionsFile))
		gp, err := os.ReadFile(filepath.Join(got[k].Dir, PredictionsFile))
		if err != nil {
			t.Fatal(err)
		}
		if len(wp) == 0 || !bytes.Equal(wp, gp) {
			t.Errorf("%s: merged predictions differ from the unsharded run's:\n%s\nwant\n%s", got[k].Dir, gp, wp)
		}
		wm, _ := os.ReadFile(filepath.Join(want[k].Dir, MetricsFile))
		gm, _ := os.ReadFile(filepath.Join(got[k].Dir, MetricsFile))
		if timeLine.ReplaceAllString(string(wm), "") != timeLine.ReplaceAllString(string(gm), "") {
			t.Errorf("merged metrics.json differs beyond the time:\n%s\nwant\n%s", gm, wm)
		}
	}
}

// A missing shard, or one made with other settings, stops the merge with
// an error naming it, and nothing is written.
func TestMergeRefusesMissingAndForeignShards(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	r0 := shardFixture(t, dir, "run", &shard.Spec{Index: 0, Count: 2})
	ds, err := r0.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r0.Score(ctx, ds, "test", false); err != nil {
		t.Fatal(err)
	}
	m := shardFixture(t, dir, "run", nil)
	if _, err := m.MergeScores(ctx, ds, "test"); err == nil || !strings.Contains(err.Error(), "missing 1/2") {
		t.Errorf("merge with shard 1/2 missing: got %v", err)
	}
	// shard 1 made with another prompt setting (another fingerprint)
	r1 := shardFixture(t, dir, "run", &shard.Spec{Index: 1, Count: 2})
	r1.Cfg.Data.HistoryLen = 2
	if _, err := r1.Score(ctx, ds, "test", false); err != nil {
		t.Fatal(err)
	}
	_, err = m.MergeScores(ctx, ds, "test")
	if err == nil || !strings.Contains(err.Error(), "shard 1/2") || !strings.Contains(err.Error(), "fingerprint") {
		t.Errorf("merge with a foreign shard: got %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.path("score", "test-recency"), PredictionsFile)); !os.IsNotExist(err) {
		t.Errorf("a refused merge wrote predictions: %v", err)
	}
	none := shardFixture(t, dir, "empty", nil)
	if _, err := none.MergeScores(ctx, ds, "test"); err == nil || !strings.Contains(err.Error(), "rella score --shard") {
		t.Errorf("merge without shards: got %v", err)
	}
}

// Item embeddings sharded (out of order) and merged save the same
// item_embeddings.safetensors as an unsharded run.
func TestShardedEmbeddingMergesToTheUnshardedRun(t *testing.T) {
	// Byte-identity needs a GEMM whose rows do not depend on the batch they
	// share: gonum's (a BLAS library's, like cuBLAS', may differ in the last bits).
	t.Setenv("RELLA_BLAS", "none")
	dir := t.TempDir()
	ctx := context.Background()
	whole := shardFixture(t, dir, "whole", nil)
	ds, err := whole.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := whole.Embed(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 3, 0, 2} {
		r := shardFixture(t, dir, "sharded", nil)
		if err := r.EmbedShard(ctx, ds, shard.Spec{Index: i, Count: 4}); err != nil {
			t.Fatalf("shard %d/4: %v", i, err)
		}
	}
	m := shardFixture(t, dir, "sharded", nil)
	ok, err := m.MergeEmbeddings(ctx, ds)
	if err != nil || !ok {
		t.Fatalf("merge: %v, %v", ok, err)
	}
	want, _ := os.ReadFile(whole.embeddingsPath())
	got, err := os.ReadFile(m.embeddingsPath())
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 || !bytes.Equal(want, got) {
		t.Errorf("merged embeddings (%d bytes) differ from the unsharded run's (%d bytes)", len(got), len(want))
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
