package cpu

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/cpu/internal/gemm"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// blasRequiredEnv, set to 1 (scripts/test.sh does where it installs
// OpenBLAS), turns "no BLAS library" from a skip into a failure.
const blasRequiredEnv = "RELLA_BLAS_REQUIRED"

// libraryEngine returns an engine on the "auto" GEMM, skipping the test
// (failing under RELLA_BLAS_REQUIRED=1) when that is gonum.
func libraryEngine(t *testing.T, m *model.Model, o Options) *Engine {
	t.Helper()
	o.BLAS = "auto"
	e, err := New(m, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.mm.(gemm.Gonum); ok {
		msg := "no optimised CBLAS library (e.g. Debian's libopenblas0-pthread) loads here, so there is no second GEMM path to compare"
		if os.Getenv(blasRequiredEnv) == "1" {
			t.Fatalf("%s (%s=1)", msg, blasRequiredEnv)
		}
		t.Skip(msg)
	}
	t.Logf("library GEMM: %v", e.mm)
	return e
}

// gonumEngine returns an engine on gonum's GEMM.
func gonumEngine(t *testing.T, m *model.Model, o Options) *Engine {
	t.Helper()
	o.BLAS = "none"
	e, err := New(m, o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// quickstartModel is configs/quickstart.yaml's generated model (generate:
// hidden 64, 2 layers, 4 heads, 2 KV heads, intermediate 172, init_std
// 0.05, the 32,000-piece vocabulary).
func quickstartModel(t testing.TB) *model.Model {
	dir := filepath.Join(t.TempDir(), "quickstart")
	o := model.InitOptions{Hidden: 64, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 172, Vocab: 32000, Seed: 42, Std: 0.05}
	if err := model.Init(dir, o); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func maxDiff32(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

func gradsOf(ps []*engine.Param) []float64 {
	var g []float64
	for _, p := range ps {
		for _, v := range p.Grad {
			g = append(g, float64(v))
		}
	}
	return g
}

// The engine gives the same results on the library's GEMM as on gonum's,
// within the tolerances of the existing tests: stories260K against
// llama2.c's logits (1e-4, TestStories260KReference) in float32 and
// float64, and the quickstart's model, scoring and LoRA training (1e-5 on
// logits and relative 1e-5 on loss and gradients, as TestBatchEqualsSingle
// allows between two summation orders).
func TestGEMMPathsAgree(t *testing.T) {
	ctx := context.Background()
	t.Run("stories260K", func(t *testing.T) {
		m, ref := loadStories(t)
		for _, dt := range []string{"float32", "float64"} {
			lib, gon := libraryEngine(t, m, Options{DType: dt}), gonumEngine(t, m, Options{DType: dt})
			for _, s := range ref.Sequences {
				seqs := [][]int{s.Tokens, s.Tokens[:1]}
				got, err := lib.LastLogits(ctx, seqs, nil)
				if err != nil {
					t.Fatal(err)
				}
				base, err := gon.LastLogits(ctx, seqs, nil)
				if err != nil {
					t.Fatal(err)
				}
				dl, d0, dg := maxAbsDiff(got[0], s.LogitsLast), maxAbsDiff(got[1], s.LogitsPos0), maxDiff32(got[0], base[0])
				t.Logf("%s %s: library vs llama2.c %.2g (last) %.2g (position 0); vs gonum %.2g", dt, s.Name, dl, d0, dg)
				if dl > 1e-4 || d0 > 1e-4 || dg > 1e-4 {
					t.Errorf("%s %s: library GEMM logits differ from llama2.c by %g (last), %g (position 0), from gonum's by %g", dt, s.Name, dl, d0, dg)
				}
			}
		}
	})
	t.Run("quickstart", func(t *testing.T) {
		m := quickstartModel(t)
		rng := rand.New(rand.NewPCG(16, 1))
		seqs := randomSeqs(rng, []int{250, 181, 37, 250}, m.Config.VocabSize)
		ex := examples(rng, seqs, m.Config.VocabSize)
		params := loraParams(m, []string{"q_proj", "v_proj"}, 8, 0.05, 0.05, 2)
		lo := &LoRA{Scale: 2, Dropout: 0.05, Params: params}
		lib, gon := libraryEngine(t, m, Options{LoRA: lo}), gonumEngine(t, m, Options{LoRA: lo})
		type result struct {
			logits, hidden [][]float32
			loss           float64
			grads          []float64
		}
		runAll := func(e *Engine) result {
			var r result
			var err error
			if r.logits, err = e.LastLogits(ctx, seqs, nil); err != nil {
				t.Fatal(err)
			}
			if r.hidden, err = e.MeanHidden(ctx, seqs); err != nil {
				t.Fatal(err)
			}
			zeroGrads(params)
			if r.loss, _, err = e.LossGrad(ctx, ex, 7); err != nil {
				t.Fatal(err)
			}
			r.grads = gradsOf(params)
			return r
		}
		a, b := runAll(lib), runAll(gon)
		for i := range seqs {
			dl, dh := maxDiff32(a.logits[i], b.logits[i]), maxDiff32(a.hidden[i], b.hidden[i])
			if dl > 1e-5 || dh > 1e-5 {
				t.Errorf("sequence %d: library vs gonum logits differ by %g, mean hidden by %g", i, dl, dh)
			}
		}
		rl, rg := math.Abs(a.loss-b.loss)/math.Abs(b.loss), relErr(a.grads, b.grads)
		t.Logf("loss %g vs %g (relative %.2g), gradients relative error %.2g", a.loss, b.loss, rl, rg)
		if rl > 1e-5 || !(rg <= 1e-5) {
			t.Errorf("library vs gonum: loss relative difference %g, gradients relative error %g", rl, rg)
		}
	})
}

// RELLA_BLAS=none gives gonum, an explicit Options.BLAS wins over the
// environment, and a library that cannot be used is an error naming it.
func TestGEMMFallback(t *testing.T) {
	m := tinyModel(t, 0.3)
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	t.Setenv(gemm.Env, "none")
	e, err := New(m, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.mm.String(); got != "gonum" {
		t.Errorf("%s=none: GEMM %q, want gonum", gemm.Env, got)
	}
	if line := logBuf.String(); strings.Count(line, "\n") != 1 || !strings.Contains(line, "gemm=gonum") {
		t.Errorf("log %q, want one line with gemm=gonum", line)
	}
	if _, err := e.LastLogits(context.Background(), [][]int{{1, 5, 9}}, nil); err != nil {
		t.Fatal(err)
	}

	bad := filepath.Join(t.TempDir(), "libcblas-missing.so")
	t.Setenv(gemm.Env, bad)
	_, err = New(m, Options{})
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), gemm.Env) {
		t.Errorf("%s=%s: error %v, want one naming the variable and the path", gemm.Env, bad, err)
	}
	if e, err := New(m, Options{BLAS: "none"}); err != nil || e.mm.String() != "gonum" {
		t.Errorf("Options.BLAS none with a bad %s: %v, %v; want gonum", gemm.Env, e, err)
	}
	t.Setenv(gemm.Env, "openblas")
	if _, err := New(m, Options{}); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("%s=openblas: error %v, want one asking for auto, none or an absolute path", gemm.Env, err)
	}
}

// Repeated runs of one graph reuse its buffers (the ops' outputs are not
// reallocated) and give bit-identical results: nothing of an earlier run,
// on other tokens, leaks into a later one, and a fresh engine agrees.
func TestGraphReuseIsStateless(t *testing.T) {
	m := tinyModel(t, 0.3)
	ctx := context.Background()
	lens := []int{5, 17, 9}
	rng := rand.New(rand.NewPCG(5, 6))
	seqsA, seqsB := randomSeqs(rng, lens, m.Config.VocabSize), randomSeqs(rng, lens, m.Config.VocabSize)
	exA := examples(rng, seqsA, m.Config.VocabSize)
	exB := make([]engine.Example, len(exA)) // same labelled positions (same graph), other tokens and labels
	for i, x := range exA {
		labels := make([]int, len(x.Labels))
		for t0, l := range x.Labels {
			labels[t0] = l
			if l != engine.IgnoreIndex {
				labels[t0] = (l + 7) % m.Config.VocabSize
			}
		}
		exB[i] = engine.Example{Tokens: seqsB[i], Labels: labels}
	}
	specs := []string{"none"}
	if g, _, err := gemm.Open("auto"); err == nil && g.String() != "gonum" {
		specs = append(specs, "auto")
	}
	for _, spec := range specs {
		for _, dt := range []string{"float32", "float64"} {
			params := loraParams(m, []string{"q_proj", "v_proj", "down_proj"}, 4, 0.3, 0.3, 5)
			mk := func() *Engine {
				e, err := New(m, Options{DType: dt, BLAS: spec, LoRA: &LoRA{Scale: 2, Dropout: 0.25, Params: params}})
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			score := func(e *Engine, seqs [][]int) [][]float32 {
				l, err := e.LastLogits(ctx, seqs, nil)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			train := func(e *Engine, ex []engine.Example) []float64 {
				zeroGrads(params)
				loss, _, err := e.LossGrad(ctx, ex, 3)
				if err != nil {
					t.Fatal(err)
				}
				return append(gradsOf(params), loss)
			}
			e := mk()
			l1, g1 := score(e, seqsA), train(e, exA)
			out1 := outputData(t, e)
			score(e, seqsB)
			train(e, exB)
			l2, g2 := score(e, seqsA), train(e, exA)
			if out2 := outputData(t, e); out2 != out1 {
				t.Errorf("%s %s: the scoring graph's output was reallocated between runs", spec, dt)
			}
			fresh := mk()
			l3, g3 := score(fresh, seqsA), train(fresh, exA)
			for i := range l1 {
				for j := range l1[i] {
					if l1[i][j] != l2[i][j] || l1[i][j] != l3[i][j] {
						t.Fatalf("%s %s: sequence %d logit %d: first run %g, after other runs %g, fresh engine %g", spec, dt, i, j, l1[i][j], l2[i][j], l3[i][j])
					}
				}
			}
			for i := range g1 {
				if g1[i] != g2[i] || g1[i] != g3[i] {
					t.Fatalf("%s %s: gradient/loss %d: first run %g, after other runs %g, fresh engine %g", spec, dt, i, g1[i], g2[i], g3[i])
				}
			}
		}
	}
}

// outputData is the address of the final-norm output of the engine's
// scoring graph, to tell reuse from reallocation.
func outputData(t *testing.T, e *Engine) uintptr {
	t.Helper()
	for k, gr := range e.graphs {
		if k.train {
			continue
		}
		d, err := dense(gr.out.Value())
		if err != nil {
			t.Fatal(err)
		}
		return d.Uintptr()
	}
	t.Fatal("no scoring graph")
	return 0
}
