package cpu

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

func benchSeqs(n, length, vocab int) [][]int {
	rng := rand.New(rand.NewPCG(1, 1))
	return randomSeqs(rng, func() []int {
		l := make([]int, n)
		for i := range l {
			l[i] = length
		}
		return l
	}(), vocab)
}

func benchForward(b *testing.B, m *model.Model, rows []int) {
	e, err := New(m, Options{})
	if err != nil {
		b.Fatal(err)
	}
	seqs := benchSeqs(8, 400, m.Config.VocabSize)
	ctx := context.Background()
	if _, err := e.LastLogits(ctx, seqs, rows); err != nil { // build the graph
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.LastLogits(ctx, seqs, rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(8*400*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkForwardStories260K: 8 × 400 tokens through stories260K.
func BenchmarkForwardStories260K(b *testing.B) {
	m, err := model.Load(testenv.Shared(b, "fixtures/stories260K"))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	benchForward(b, m, nil)
}

func defaultShapeModel(b *testing.B) *model.Model {
	dir := filepath.Join(b.TempDir(), "m")
	if err := model.Init(dir, model.DefaultInitOptions()); err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkForwardInitModel: 8 × 400 tokens through the init-model default
// shape (hidden 64, 2 layers, vocab 32,000), scoring two logit rows.
func BenchmarkForwardInitModel(b *testing.B) {
	benchForward(b, defaultShapeModel(b), []int{1939, 3869})
}

// BenchmarkLossGradInitModel: LoRA r8 on q/v (dropout 0.05), 8 × 400 tokens
// with 2 labelled tokens each, on the init-model default shape.
func BenchmarkLossGradInitModel(b *testing.B) {
	m := defaultShapeModel(b)
	params := loraParams(m, []string{"q_proj", "v_proj"}, 8, 0.02, 0.02, 1)
	e, err := New(m, Options{LoRA: &LoRA{Scale: 2, Dropout: 0.05, Params: params}})
	if err != nil {
		b.Fatal(err)
	}
	var ex []engine.Example
	for _, s := range benchSeqs(8, 400, m.Config.VocabSize) {
		labels := make([]int, len(s))
		for t := range labels {
			labels[t] = engine.IgnoreIndex
		}
		labels[len(s)-2], labels[len(s)-1] = 3869, 29889
		ex = append(ex, engine.Example{Tokens: s, Labels: labels})
	}
	ctx := context.Background()
	if _, _, err := e.LossGrad(ctx, ex, 1); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := e.LossGrad(ctx, ex, uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(8*400*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
