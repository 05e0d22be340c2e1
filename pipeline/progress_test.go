package pipeline

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rella-project/rella/internal/progress"
)

// slowEngine answers LastLogits with logit(No) = 0, logit(Yes) = the
// sequence's length / 10, moving a fake clock 10 s per call.
type slowEngine struct {
	now   *time.Time
	calls int
}

func (e *slowEngine) LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error) {
	*e.now = e.now.Add(10 * time.Second)
	e.calls++
	out := make([][]float32, len(seqs))
	for i, s := range seqs {
		out[i] = []float32{0, float32(len(s)) / 10}
	}
	return out, nil
}

func (e *slowEngine) MeanHidden(ctx context.Context, seqs [][]int) ([][]float32, error) {
	return nil, nil
}
func (e *slowEngine) Close() error { return nil }

func noTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// TestScoringProgressOffTerminal: scoring 40 prompts in batches of 4 at
// 10 s a batch logs, off a terminal, a line every 30 s with done/total,
// rate, elapsed and ETA, and one when done; no bar is drawn; the results
// are unchanged (each P(Yes) is sigmoid(len/10), in input order).
func TestScoringProgressOffTerminal(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var log, term bytes.Buffer
	rep := progress.New(progress.Options{W: &term, Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{ReplaceAttr: noTime})),
		Now: func() time.Time { return now }})
	eng := &slowEngine{now: &now}
	seqs := make([][]int, 40)
	for i := range seqs {
		seqs[i] = make([]int, 1+(i*7)%13)
	}
	sc := &Scorer{Engine: eng, Yes: 1, No: 0, BatchSize: 4, Progress: rep}
	p, err := sc.PYes(context.Background(), seqs, "score")
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		if want := 1 / (1 + math.Exp(-float64(len(s))/10)); math.Abs(p[i]-want) > 1e-6 {
			t.Fatalf("p[%d] = %v, want %v", i, p[i], want)
		}
	}
	want := `level=INFO msg=score done="12/40 samples" pct=30% rate="2.5 s/sample" elapsed=30s eta=1m10s
level=INFO msg=score done="24/40 samples" pct=60% rate="2.5 s/sample" elapsed=1m00s eta=40s
level=INFO msg=score done="36/40 samples" pct=90% rate="2.5 s/sample" elapsed=1m30s eta=10s
level=INFO msg=score done="40/40 samples" pct=100% rate="2.5 s/sample" elapsed=1m40s
`
	if log.String() != want {
		t.Errorf("progress lines:\n%s\nwant:\n%s", log.String(), want)
	}
	if term.Len() != 0 {
		t.Errorf("a bar was drawn off a terminal: %q", term.String())
	}
}

// TestScoringProgressOnTerminal: on a terminal the same scoring leaves one
// row, the final bar, and logs nothing.
func TestScoringProgressOnTerminal(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var log, term bytes.Buffer
	rep := progress.New(progress.Options{Terminal: true, W: &term, Width: 100, Log: slog.New(slog.NewTextHandler(&log, nil)),
		Now: func() time.Time { return now }})
	sc := &Scorer{Engine: &slowEngine{now: &now}, Yes: 1, No: 0, BatchSize: 4, Progress: rep}
	seqs := make([][]int, 40)
	for i := range seqs {
		seqs[i] = []int{1, 2}
	}
	if _, err := sc.PYes(context.Background(), seqs, "score"); err != nil {
		t.Fatal(err)
	}
	rows, err := progress.Screen(term.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0] != "score 100% [####################] 40/40 in 1m40s | 2.5 s/sample" || log.Len() != 0 {
		t.Errorf("screen %q, log %q", rows, log.String())
	}
}

// TestNewBarOnPlainWriter: a writer that is not a terminal (a CI log
// file) gets no bar drawing characters, only records in rella's text log
// format when a task is long; a short task writes nothing.
func TestNewBarOnPlainWriter(t *testing.T) {
	var buf bytes.Buffer
	bar := newBar(&buf, 10, "embed", "items")
	for i := 0; i < 10; i++ {
		bar.Add(1)
	}
	bar.Finish()
	if buf.Len() != 0 || strings.Contains(buf.String(), "\r") {
		t.Errorf("short task on a plain writer wrote %q", buf.String())
	}
}
