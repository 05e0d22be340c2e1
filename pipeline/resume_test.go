package pipeline

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/testenv"
)

// fakeEngine scores a sequence with logits that depend on its tokens only,
// counts the sequences it scored and, after `cancelAfter` batches, cancels
// the run (as Ctrl-C would) and fails the batch with the context's error.
type fakeEngine struct {
	scored      int
	batches     int
	cancelAfter int
	cancel      context.CancelFunc
}

func (f *fakeEngine) LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error) {
	if f.cancel != nil && f.batches == f.cancelAfter {
		f.cancel()
		return nil, ctx.Err()
	}
	f.batches++
	out := make([][]float32, len(seqs))
	for i, s := range seqs {
		sum := 0
		for j, t := range s {
			sum += (j + 1) * t
		}
		out[i] = []float32{0, float32(sum%97)/20 - 2.4}
		f.scored++
	}
	return out, nil
}
func (f *fakeEngine) MeanHidden(context.Context, [][]int) ([][]float32, error) { return nil, nil }
func (f *fakeEngine) Close() error                                             { return nil }

// evalFixture is a one-user dataset with 20 test samples and prompts of
// varying lengths.
func evalFixture() (*data.Dataset, []data.Sample, [][]int) {
	ds := &data.Dataset{Kind: data.ML1M, Users: []data.User{{ID: "u7"}}}
	for i := 0; i < 30; i++ {
		ds.Items = append(ds.Items, data.Item{ID: "m" + string(rune('A'+i))})
	}
	seq := make([]data.Event, 30)
	for i := range seq {
		seq[i] = data.Event{Item: int32(29 - i), Rating: 4}
	}
	ds.Seqs = [][]data.Event{seq}
	var samples []data.Sample
	var seqs [][]int
	for i := 0; i < 20; i++ {
		samples = append(samples, data.Sample{User: 0, Pos: int32(5 + i), Label: int8(i % 2)})
		s := make([]int, 3+(i*7)%11)
		for j := range s {
			s[j] = 1 + (i*31+j*17)%500
		}
		seqs = append(seqs, s)
	}
	ds.Test = samples
	return ds, samples, seqs
}

func testRunner(t *testing.T, out string, log io.Writer) *Runner {
	c := configs.Default()
	c.OutputDir = out
	return &Runner{Cfg: &c, Log: slog.New(slog.NewTextHandler(log, nil))}
}

// issue 11 item 7: scoring stopped by a cancelled context keeps the
// batches it finished; the rerun scores only the rest and ends with the
// predictions and metrics of a run that was never interrupted.
func TestInterruptedScoringContinues(t *testing.T) {
	ds, samples, seqs := evalFixture()
	base := t.TempDir()

	whole := testRunner(t, base, io.Discard)
	eng := &fakeEngine{}
	wantRes, err := whole.evaluate(context.Background(), &Scorer{Engine: eng, BatchSize: 4}, filepath.Join(base, "whole"), &Record{Variant: "v", Fingerprint: "fp1"}, ds, samples, seqs)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(base, "whole", PredictionsFile))

	var log bytes.Buffer
	r := testRunner(t, base, &log)
	dir := filepath.Join(base, "cut")
	ctx, cancel := context.WithCancel(context.Background())
	eng = &fakeEngine{cancelAfter: 3, cancel: cancel}
	_, err = r.evaluate(ctx, &Scorer{Engine: eng, BatchSize: 4}, dir, &Record{Variant: "v", Fingerprint: "fp1"}, ds, samples, seqs)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "continues") {
		t.Fatalf("interrupted pass: got %v, want a cancelled error that says the rerun continues", err)
	}
	if _, err := os.Stat(filepath.Join(dir, MetricsFile)); err == nil {
		t.Fatal("an interrupted pass wrote metrics.json")
	}
	part, err := os.ReadFile(filepath.Join(dir, partialFile))
	if err != nil || bytes.Count(part, []byte("\n")) != 1+12 {
		t.Fatalf("partial file after 3 batches of 4: %d lines (want header + 12), %v", bytes.Count(part, []byte("\n")), err)
	}

	eng = &fakeEngine{}
	res, err := r.evaluate(context.Background(), &Scorer{Engine: eng, BatchSize: 4}, dir, &Record{Variant: "v", Fingerprint: "fp1"}, ds, samples, seqs)
	if err != nil {
		t.Fatal(err)
	}
	if eng.scored != 8 {
		t.Errorf("the rerun scored %d samples, want the 8 left", eng.scored)
	}
	if !strings.Contains(log.String(), "continuing an interrupted pass") {
		t.Errorf("the rerun does not say it continues:\n%s", log.String())
	}
	got, _ := os.ReadFile(filepath.Join(dir, PredictionsFile))
	if !bytes.Equal(got, want) || res != wantRes {
		t.Errorf("interrupted+continued results differ from an uninterrupted run:\n%s\nwant\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, partialFile)); !os.IsNotExist(err) {
		t.Errorf("the partial file outlived the finished pass: %v", err)
	}

	// A partial file of other settings is not continued from.
	ctx, cancel = context.WithCancel(context.Background())
	r.evaluate(ctx, &Scorer{Engine: &fakeEngine{cancelAfter: 2, cancel: cancel}, BatchSize: 4}, dir, &Record{Variant: "v", Fingerprint: "fp1"}, ds, samples, seqs)
	eng = &fakeEngine{}
	if _, err := r.evaluate(context.Background(), &Scorer{Engine: eng, BatchSize: 4}, dir, &Record{Variant: "v", Fingerprint: "fp2"}, ds, samples, seqs); err != nil {
		t.Fatal(err)
	}
	if eng.scored != 20 {
		t.Errorf("with another fingerprint the rerun scored %d samples, want all 20", eng.scored)
	}
}

// issue 11 item 7: embedding stopped after a chunk keeps the chunk; the
// rerun embeds the rest and ends with the embeddings of an uninterrupted run.
func TestInterruptedEmbeddingContinues(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	dir := t.TempDir()
	cfg := func(out string, log io.Writer) *Runner {
		r := testRunner(t, filepath.Join(dir, out), log)
		c := r.Cfg
		c.Generate = configs.Generate{Data: true, DataUsers: 40, DataItems: 400, Model: true, Tokenizer: tok, Hidden: 16, Layers: 1, Heads: 2, KVHeads: 1, FFN: 32, InitStd: 0.02}
		c.Data.Dir, c.Model.Path = filepath.Join(dir, "source"), filepath.Join(dir, "model")
		c.Data.HistoryLen = 3
		c.Retrieval.BatchSize = 16
		return r
	}
	whole := cfg("whole", io.Discard)
	ds, err := whole.Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Items) <= embedChunk {
		t.Fatalf("%d items: the test needs more than one chunk of %d", len(ds.Items), embedChunk)
	}
	want, err := whole.Embed(context.Background(), ds)
	if err != nil {
		t.Fatal(err)
	}

	var log bytes.Buffer
	cut := cfg("cut", &log)
	ctx, cancel := context.WithCancel(context.Background())
	cut.embedChunkDone = func(int) { cancel() }
	if _, err := cut.Embed(ctx, ds); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted embedding: got %v, want context.Canceled", err)
	}
	cut.embedChunkDone = nil
	got, err := cut.Embed(context.Background(), ds)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "continuing an interrupted run") || !strings.Contains(log.String(), "done=256") {
		t.Errorf("the rerun did not continue from the first chunk:\n%s", log.String())
	}
	if len(got.Rows) != len(want.Rows) || got.Fingerprint != want.Fingerprint {
		t.Fatalf("got %d rows (fingerprint %s), want %d (%s)", len(got.Rows), got.Fingerprint, len(want.Rows), want.Fingerprint)
	}
	for i := range want.Rows {
		for j := range want.Rows[i] {
			if got.Rows[i][j] != want.Rows[i][j] {
				t.Fatalf("item %d dim %d: %v after the interruption, %v without", i, j, got.Rows[i][j], want.Rows[i][j])
			}
		}
	}
	if _, err := os.Stat(cut.embeddingsPath() + ".partial"); !os.IsNotExist(err) {
		t.Errorf("the partial embeddings outlived the finished run: %v", err)
	}
}
