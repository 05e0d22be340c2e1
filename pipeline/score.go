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
// first). The sequences are taken in windows of Window() consecutive ones;
// within a window they run in batches sorted by length, so that little
// padding is wasted. The results come back in the input order. A window
// never spans another, so a shard whose slice starts at a window boundary
// runs exactly the batches of an unsharded run and gets the same bits from
// any engine (BLAS and cuBLAS results may depend on a batch's shape).
func (s *Scorer) PYes(ctx context.Context, seqs [][]int, desc string) ([]float64, error) {
	return s.pYes(ctx, seqs, desc, nil, nil)
}

// windowBatches is how many batches a window of PYes sorts by length:
// enough that the batches of prompts with similar lengths waste little
// padding, small enough that shards of a split cut at window boundaries
// stay even.
const windowBatches = 8

// Window is how many consecutive sequences PYes sorts by length together:
// windowBatches batches (the last window of a pass may be shorter).
func (s *Scorer) Window() int { return scoreWindow(s.BatchSize) }

// scoreWindow is the Window of a Scorer with batches of batchSize.
func scoreWindow(batchSize int) int { return windowBatches * max(batchSize, 1) }

// pYes is PYes continuing an interrupted pass: known holds the results that
// pass saved (index -> P(Yes)); the batches it finished are not run again
// (the batches are the same whatever was interrupted, so the results are
// too). save, when set, gets every batch scored here.
func (s *Scorer) pYes(ctx context.Context, seqs [][]int, desc string, known map[int]float64, save func(idx []int, p []float64) error) ([]float64, error) {
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	w := s.Window()
	for lo := 0; lo < len(order); lo += w {
		win := order[lo:min(lo+w, len(order))]
		sort.SliceStable(win, func(a, b int) bool { return len(seqs[win[a]]) < len(seqs[win[b]]) })
	}
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
