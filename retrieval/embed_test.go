package retrieval

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// fakeEngine embeds a sequence as [length, sum of ids, first id] and records
// the batches it sees.
type fakeEngine struct {
	batches [][]int // lengths per call
	fail    bool
	short   bool
}

func (f *fakeEngine) LastLogits(context.Context, [][]int, []int) ([][]float32, error) {
	return nil, errors.New("not used")
}

func (f *fakeEngine) MeanHidden(_ context.Context, seqs [][]int) ([][]float32, error) {
	if f.fail {
		return nil, errors.New("out of memory")
	}
	var lens []int
	out := make([][]float32, len(seqs))
	for i, s := range seqs {
		lens = append(lens, len(s))
		sum := 0
		for _, t := range s {
			sum += t
		}
		out[i] = []float32{float32(len(s)), float32(sum), float32(s[0])}
	}
	f.batches = append(f.batches, lens)
	if f.short {
		out = out[1:]
	}
	return out, nil
}

func (f *fakeEngine) Close() error { return nil }

func TestEmbedItems(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	seqs := make([][]int, 23)
	for i := range seqs {
		seqs[i] = make([]int, 1+rng.IntN(30))
		for j := range seqs[i] {
			seqs[i][j] = 1 + rng.IntN(1000)
		}
	}
	eng := &fakeEngine{}
	var done []int
	emb, err := EmbedItems(context.Background(), eng, seqs, 5, func(d, total int) {
		if total != 23 {
			t.Errorf("progress total %d", total)
		}
		done = append(done, d)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		sum := 0
		for _, v := range s {
			sum += v
		}
		if !slices.Equal(emb[i], []float32{float32(len(s)), float32(sum), float32(s[0])}) {
			t.Fatalf("item %d: embedding %v belongs to another item", i, emb[i])
		}
	}
	if !slices.Equal(done, []int{5, 10, 15, 20, 23}) {
		t.Fatalf("progress %v", done)
	}
	var lens []int
	for _, b := range eng.batches {
		if len(b) > 5 {
			t.Fatalf("batch of %d > 5", len(b))
		}
		lens = append(lens, b...)
	}
	if !slices.IsSortedFunc(lens, func(a, b int) int { return b - a }) {
		t.Fatalf("batches not longest first: %v", lens)
	}
	for _, bad := range []*fakeEngine{{fail: true}, {short: true}} {
		if _, err := EmbedItems(context.Background(), bad, seqs, 5, nil); err == nil {
			t.Errorf("%+v: want error", bad)
		}
	}
	if _, err := EmbedItems(context.Background(), eng, [][]int{{}}, 5, nil); err == nil {
		t.Error("empty sequence: want error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := EmbedItems(ctx, eng, seqs, 5, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
