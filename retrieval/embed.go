package retrieval

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/rella-project/rella/engine"
)

// EmbedItems runs eng.MeanHidden over the items' token sequences (the
// Vicuna-wrapped item texts of RELLA.md 4.1, BOS first) at most batch at a
// time and returns one embedding per sequence, in input order. Batches are
// formed longest first, so that sequences of similar length share a batch
// (little padding) and the most memory-hungry batch runs first. progress,
// when non-nil, is called after each batch with the number of items done.
func EmbedItems(ctx context.Context, eng engine.Engine, seqs [][]int, batch int, progress func(done, total int)) ([][]float32, error) {
	if batch <= 0 {
		return nil, fmt.Errorf("retrieval.batch_size: must be positive, got %d", batch)
	}
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
		if len(seqs[i]) == 0 {
			return nil, fmt.Errorf("retrieval: embed: item %d has no tokens", i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(seqs[b]), len(seqs[a])) })
	out := make([][]float32, len(seqs))
	dim := -1
	part := make([][]int, 0, batch)
	for lo := 0; lo < len(order); lo += batch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("retrieval: embed: %w", err)
		}
		idx := order[lo:min(lo+batch, len(order))]
		part = part[:0]
		for _, i := range idx {
			part = append(part, seqs[i])
		}
		emb, err := eng.MeanHidden(ctx, part)
		if err != nil {
			return nil, fmt.Errorf("retrieval: embed items %d..%d of %d: %w", lo, lo+len(idx)-1, len(order), err)
		}
		if len(emb) != len(idx) {
			return nil, fmt.Errorf("retrieval: embed: engine returned %d embeddings for %d items", len(emb), len(idx))
		}
		for j, e := range emb {
			if dim < 0 {
				dim = len(e)
			}
			if len(e) != dim || dim == 0 {
				return nil, fmt.Errorf("retrieval: embed: item %d has an embedding of length %d, want %d", idx[j], len(e), dim)
			}
			for _, v := range e {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return nil, fmt.Errorf("retrieval: embed: item %d has a non-finite embedding", idx[j])
				}
			}
			out[idx[j]] = e
		}
		if progress != nil {
			progress(lo+len(idx), len(order))
		}
	}
	return out, nil
}
