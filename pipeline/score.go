package pipeline

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/rella-project/rella/engine"
)

// Encoder turns text into token ids; *tokenizer.Tokenizer is one.
type Encoder interface {
	Encode(text string, addBOS bool) []int
}

// Scorer computes P(Yes) for prompts: the softmax over the ▁No and ▁Yes
// logits at the last prompt position (RELLA.md section 3).
type Scorer struct {
	Engine    engine.Engine
	Yes, No   int // token ids of ▁Yes and ▁No
	BatchSize int
	Progress  io.Writer // where the progress bar goes; nil = none
}

// PYes scores token sequences (prompts already wrapped and encoded, BOS
// first). Sequences are run in batches sorted by length, so that little
// padding is wasted, and the results come back in the input order.
func (s *Scorer) PYes(ctx context.Context, seqs [][]int, desc string) ([]float64, error) {
	return s.pYes(ctx, seqs, desc, nil, nil)
}

// pYes is PYes continuing an interrupted pass: known holds the results that
// pass saved (index -> P(Yes)); the batches it finished are not run again
// (the batches are the same whatever was interrupted, so the results are
// too). save, when set, gets every batch scored here.
func (s *Scorer) pYes(ctx context.Context, seqs [][]int, desc string, known map[int]float64, save func(idx []int, p []float64) error) ([]float64, error) {
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(seqs[order[a]]) < len(seqs[order[b]]) })
	p := make([]float64, len(seqs))
	bs := max(s.BatchSize, 1)
	done := 0
	for done < len(order) {
		if _, ok := known[order[done]]; !ok {
			break
		}
		done++
	}
	if done < len(order) {
		done = done / bs * bs // resume at a batch boundary
	}
	for _, j := range order[:done] {
		p[j] = known[j]
	}
	bar := newBar(s.Progress, len(seqs), desc, "samples")
	defer bar.Finish()
	bar.Add(done)
	for start := done; start < len(order); start += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		idx := order[start:min(start+bs, len(order))]
		batch := make([][]int, len(idx))
		for i, j := range idx {
			batch[i] = seqs[j]
		}
		logits, err := s.Engine.LastLogits(ctx, batch, []int{s.No, s.Yes})
		if err != nil {
			return nil, fmt.Errorf("score: %w", err)
		}
		out := make([]float64, len(idx))
		for i, j := range idx {
			p[j] = pYes(float64(logits[i][0]), float64(logits[i][1]))
			out[i] = p[j]
		}
		if save != nil {
			if err := save(idx, out); err != nil {
				return nil, fmt.Errorf("score: saving finished predictions: %w", err)
			}
		}
		bar.Add(len(idx))
	}
	return p, nil
}

// pYes is softmax([no, yes])[1], computed stably.
func pYes(no, yes float64) float64 {
	d := no - yes
	if d > 0 {
		e := math.Exp(-d)
		return e / (1 + e)
	}
	return 1 / (1 + math.Exp(d))
}
