package cpu

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"gonum.org/v1/gonum/blas"

	"github.com/rella-project/rella/cpu/internal/gemm"
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
	ex := benchExamples(m)
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

// flopCounter wraps a GEMM and counts its floating-point operations
// (2·m·n·k per call), for the GFLOP/s the benchmarks report.
type flopCounter struct {
	gemm.GEMM
	flops atomic.Int64
}

func (f *flopCounter) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	f.flops.Add(2 * int64(m) * int64(n) * int64(k))
	f.GEMM.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func (f *flopCounter) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	f.flops.Add(2 * int64(m) * int64(n) * int64(k))
	f.GEMM.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// scaleShape is issue 16's comparison model: hidden 512, 6 layers, 8 heads
// of 64 (no GQA), intermediate 1376, LLaMA's 32,000-piece vocabulary.
var scaleShape = model.InitOptions{Hidden: 512, Layers: 6, Heads: 8, KVHeads: 8, Intermediate: 1376, Vocab: 32000, Seed: 1, DType: "f32"}

// benchGEMMPaths runs one sub-benchmark per GEMM ("gonum", and "blas"
// when an optimised CBLAS library loads) with an engine made by mk from
// the BLAS spec; step does one iteration. It reports tokens/s (8 × 400
// per step) and GFLOP/s (GEMM operations per second of the whole step).
func benchGEMMPaths(b *testing.B, mk func(spec string) *Engine, step func(e *Engine, i int)) {
	for _, p := range []struct{ name, spec string }{{"gemm=gonum", "none"}, {"gemm=blas", "auto"}} {
		b.Run(p.name, func(b *testing.B) {
			e := mk(p.spec)
			if _, ok := e.mm.(gemm.Gonum); ok && p.spec != "none" {
				b.Skip("no optimised CBLAS library loads here (install Debian's libopenblas0-pthread)")
			}
			b.Logf("GEMM: %v", e.mm)
			fc := &flopCounter{GEMM: e.mm}
			e.mm = fc  // graphs are built on first use, so they all count
			step(e, 0) // build the graph
			fc.flops.Store(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				step(e, i+1)
			}
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(8*400*b.N)/s, "tokens/s")
			b.ReportMetric(float64(fc.flops.Load())/s/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkScale512Score: scoring (two LM-head rows) of 8 × 400 tokens at
// scaleShape, on both GEMM paths.
func BenchmarkScale512Score(b *testing.B) {
	m := scaleModel(b)
	seqs := benchSeqs(8, 400, m.Config.VocabSize)
	benchGEMMPaths(b, func(spec string) *Engine {
		e, err := New(m, Options{BLAS: spec})
		if err != nil {
			b.Fatal(err)
		}
		return e
	}, func(e *Engine, _ int) {
		if _, err := e.LastLogits(context.Background(), seqs, []int{1939, 3869}); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkScale512LossGrad: LoRA r 8 on q/v (dropout 0.05) LossGrad over
// 8 × 400 tokens with 2 labelled tokens each at scaleShape, on both paths.
func BenchmarkScale512LossGrad(b *testing.B) {
	m := scaleModel(b)
	params := loraParams(m, []string{"q_proj", "v_proj"}, 8, 0.02, 0.02, 1)
	ex := benchExamples(m)
	benchGEMMPaths(b, func(spec string) *Engine {
		e, err := New(m, Options{BLAS: spec, LoRA: &LoRA{Scale: 2, Dropout: 0.05, Params: params}})
		if err != nil {
			b.Fatal(err)
		}
		return e
	}, func(e *Engine, i int) {
		if _, _, err := e.LossGrad(context.Background(), ex, uint64(i)); err != nil {
			b.Fatal(err)
		}
	})
}

// benchExamples are 8 × 400 random tokens with the last two labelled
// (the answer and the end of a ReLLa prompt).
func benchExamples(m *model.Model) []engine.Example {
	var ex []engine.Example
	for _, s := range benchSeqs(8, 400, m.Config.VocabSize) {
		labels := make([]int, len(s))
		for t := range labels {
			labels[t] = engine.IgnoreIndex
		}
		labels[len(s)-2], labels[len(s)-1] = 3869, 29889
		ex = append(ex, engine.Example{Tokens: s, Labels: labels})
	}
	return ex
}

func scaleModel(b *testing.B) *model.Model {
	dir := filepath.Join(b.TempDir(), "m")
	if err := model.Init(dir, scaleShape); err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}
