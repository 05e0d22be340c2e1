package cpu

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// tinyModel writes and opens a small random LLaMA (GQA, untied head).
func tinyModel(t testing.TB, std float64) *model.Model {
	dir := filepath.Join(t.TempDir(), "tiny")
	err := model.Init(dir, model.InitOptions{Hidden: 16, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 24, Vocab: 40, Seed: 7, Std: std})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// loraParams makes rank-r adapters on the given modules of every layer,
// with A and B drawn N(0, std) (bStd 0 gives B = 0).
func loraParams(m *model.Model, modules []string, r int, std, bStd float64, seed uint64) []*engine.Param {
	rng := rand.New(rand.NewPCG(seed, 3))
	c := m.Config
	dims := map[string][2]int{ // out, in
		"q_proj": {c.QDim(), c.HiddenSize}, "k_proj": {c.KVDim(), c.HiddenSize}, "v_proj": {c.KVDim(), c.HiddenSize},
		"o_proj": {c.HiddenSize, c.QDim()}, "gate_proj": {c.IntermediateSize, c.HiddenSize},
		"up_proj": {c.IntermediateSize, c.HiddenSize}, "down_proj": {c.HiddenSize, c.IntermediateSize},
	}
	part := map[string]string{"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
		"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
	var ps []*engine.Param
	mk := func(name string, shape []int, s float64) *engine.Param {
		n := shape[0] * shape[1]
		p := &engine.Param{Name: name, Shape: shape, Value: make([]float32, n), Grad: make([]float32, n)}
		for i := range p.Value {
			p.Value[i] = float32(rng.NormFloat64() * s)
		}
		return p
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for _, mod := range modules {
			base := fmt.Sprintf("base_model.model.model.layers.%d.%s.%s.", l, part[mod], mod)
			d := dims[mod]
			ps = append(ps, mk(base+"lora_A.weight", []int{r, d[1]}, std), mk(base+"lora_B.weight", []int{d[0], r}, bStd))
		}
	}
	return ps
}

func randomSeqs(rng *rand.Rand, lens []int, vocab int) [][]int {
	seqs := make([][]int, len(lens))
	for i, n := range lens {
		seqs[i] = make([]int, n)
		seqs[i][0] = 1
		for t := 1; t < n; t++ {
			seqs[i][t] = rng.IntN(vocab)
		}
	}
	return seqs
}

func examples(rng *rand.Rand, seqs [][]int, vocab int) []engine.Example {
	var ex []engine.Example
	for _, s := range seqs {
		labels := make([]int, len(s))
		for t := range labels {
			labels[t] = engine.IgnoreIndex
			if t >= len(s)-3 || rng.IntN(4) == 0 {
				labels[t] = rng.IntN(vocab)
			}
		}
		ex = append(ex, engine.Example{Tokens: s, Labels: labels})
	}
	return ex
}

func relErr(a, b []float64) float64 {
	var num, den float64
	for i := range a {
		num += (a[i] - b[i]) * (a[i] - b[i])
		den += b[i] * b[i]
	}
	return math.Sqrt(num / den)
}

func zeroGrads(ps []*engine.Param) {
	for _, p := range ps {
		clear(p.Grad)
	}
}

// A padded batch must give what one sequence at a time gives.
func TestBatchEqualsSingle(t *testing.T) {
	m := tinyModel(t, 0.3)
	rng := rand.New(rand.NewPCG(1, 2))
	seqs := randomSeqs(rng, []int{3, 17, 9, 33, 1, 16}, m.Config.VocabSize)
	ex := examples(rng, seqs, m.Config.VocabSize)
	ctx := context.Background()
	for _, dropout := range []float64{0, 0.25} {
		params := loraParams(m, []string{"q_proj", "v_proj"}, 4, 0.3, 0.3, 5)
		mkEngine := func(maxBatch int) *Engine {
			e, err := New(m, Options{MaxBatch: maxBatch, MaxTokens: 80, LoRA: &LoRA{Scale: 2, Dropout: dropout, Params: params}})
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
		batched, single := mkEngine(8), mkEngine(1)
		lb, err := batched.LastLogits(ctx, seqs, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows := []int{5, 2, 39}
		lr, err := batched.LastLogits(ctx, seqs, rows)
		if err != nil {
			t.Fatal(err)
		}
		hb, err := batched.MeanHidden(ctx, seqs)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range seqs {
			ls, err := single.LastLogits(ctx, [][]int{s}, nil)
			if err != nil {
				t.Fatal(err)
			}
			hs, err := single.MeanHidden(ctx, [][]int{s})
			if err != nil {
				t.Fatal(err)
			}
			for j := range ls[0] {
				if d := math.Abs(float64(ls[0][j] - lb[i][j])); d > 1e-5 {
					t.Fatalf("dropout %g seq %d (len %d): logit %d batched %g single %g", dropout, i, len(s), j, lb[i][j], ls[0][j])
				}
			}
			for j, r := range rows {
				if lr[i][j] != lb[i][r] {
					t.Fatalf("seq %d: rows logit %d = %g, full %g", i, r, lr[i][j], lb[i][r])
				}
			}
			for j := range hs[0] {
				if d := math.Abs(float64(hs[0][j] - hb[i][j])); d > 1e-5 {
					t.Fatalf("seq %d: mean hidden %d batched %g single %g", i, j, hb[i][j], hs[0][j])
				}
			}
		}
		// LossGrad: the whole batch at once versus split into single runs.
		zeroGrads(params)
		lossB, nB, err := batched.LossGrad(ctx, ex, 99)
		if err != nil {
			t.Fatal(err)
		}
		var gradB []float64
		for _, p := range params {
			for _, g := range p.Grad {
				gradB = append(gradB, float64(g))
			}
		}
		zeroGrads(params)
		lossS, nS, err := single.LossGrad(ctx, ex, 99)
		if err != nil {
			t.Fatal(err)
		}
		var gradS []float64
		for _, p := range params {
			for _, g := range p.Grad {
				gradS = append(gradS, float64(g))
			}
		}
		if nB != nS || math.Abs(lossB-lossS) > 1e-5*math.Abs(lossS) {
			t.Errorf("dropout %g: loss batched %g (%d tokens), single %g (%d tokens)", dropout, lossB, nB, lossS, nS)
		}
		if r := relErr(gradB, gradS); r > 1e-5 || math.IsNaN(r) {
			t.Errorf("dropout %g: gradients batched vs single differ, relative error %g", dropout, r)
		}
		want := 0
		for _, e := range ex {
			for _, l := range e.Labels {
				if l != engine.IgnoreIndex {
					want++
				}
			}
		}
		if nB != want {
			t.Errorf("LossGrad counted %d tokens, want %d", nB, want)
		}
		// A second call adds the same gradient again (nothing accumulates inside the graph).
		zeroGrads(params)
		for k := 0; k < 2; k++ {
			if _, _, err := batched.LossGrad(ctx, ex, 99); err != nil {
				t.Fatal(err)
			}
		}
		var grad2 []float64
		for _, p := range params {
			for _, g := range p.Grad {
				grad2 = append(grad2, float64(g)/2)
			}
		}
		if r := relErr(grad2, gradB); r > 1e-6 {
			t.Errorf("two LossGrad calls added %g (relative) more or less than twice one call", r)
		}
	}
}

// LossGrad's loss must be the cross-entropy of the logits LastLogits gives.
func TestLossMatchesLogits(t *testing.T) {
	m := tinyModel(t, 0.3)
	params := loraParams(m, []string{"q_proj", "v_proj"}, 4, 0.3, 0.3, 5)
	e, err := New(m, Options{DType: "float64", LoRA: &LoRA{Scale: 2, Params: params}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	seqs := randomSeqs(rng, []int{12, 5}, m.Config.VocabSize)
	ex := examples(rng, seqs, m.Config.VocabSize)
	ctx := context.Background()
	want, n := 0.0, 0
	for _, x := range ex {
		for t0, l := range x.Labels {
			if l == engine.IgnoreIndex {
				continue
			}
			lg, err := e.LastLogits(ctx, [][]int{x.Tokens[:t0+1]}, nil)
			if err != nil {
				t.Fatal(err)
			}
			mx := math.Inf(-1)
			for _, v := range lg[0] {
				mx = math.Max(mx, float64(v))
			}
			s := 0.0
			for _, v := range lg[0] {
				s += math.Exp(float64(v) - mx)
			}
			want += mx + math.Log(s) - float64(lg[0][l])
			n++
		}
	}
	got, gn, err := e.LossGrad(ctx, ex, 0)
	if err != nil {
		t.Fatal(err)
	}
	if gn != n || math.Abs(got-want) > 1e-5*math.Abs(want) {
		t.Errorf("LossGrad = %g over %d tokens, cross-entropy of LastLogits = %g over %d", got, gn, want, n)
	}
}

// LoRA gradients against central finite differences of the float64 loss.
func TestLoRAGradientsFiniteDifferences(t *testing.T) {
	m := tinyModel(t, 0.3)
	rng := rand.New(rand.NewPCG(8, 8))
	seqs := randomSeqs(rng, []int{11, 6, 19}, m.Config.VocabSize)
	ex := examples(rng, seqs, m.Config.VocabSize)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		modules []string
		dropout float64
	}{
		{"qv", []string{"q_proj", "v_proj"}, 0},
		{"all-dropout", []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := loraParams(m, tc.modules, 3, 0.3, 0.3, 11)
			e, err := New(m, Options{DType: "float64", MaxBatch: 2, LoRA: &LoRA{Scale: 2, Dropout: tc.dropout, Params: params}})
			if err != nil {
				t.Fatal(err)
			}
			const seed = 1234
			zeroGrads(params)
			if _, _, err := e.LossGrad(ctx, ex, seed); err != nil {
				t.Fatal(err)
			}
			loss := func() float64 {
				l, _, err := e.LossGrad(ctx, ex, seed)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			snap := make([][]float32, len(params))
			for i, p := range params {
				snap[i] = append([]float32(nil), p.Grad...)
			}
			var analytic, numeric []float64
			for pi, p := range params {
				g := snap[pi]
				for k := 0; k < 4; k++ {
					i := rng.IntN(len(p.Value))
					v := p.Value[i]
					const h = 1e-4
					p.Value[i] = v + h
					up := float64(p.Value[i]) - float64(v)
					lp := loss()
					p.Value[i] = v - h
					down := float64(v) - float64(p.Value[i])
					lm := loss()
					p.Value[i] = v
					analytic = append(analytic, float64(g[i]))
					numeric = append(numeric, (lp-lm)/(up+down))
				}
			}
			r := relErr(analytic, numeric)
			t.Logf("%d entries, relative error %.3g", len(analytic), r)
			// h = 1e-4 puts the O(h²) truncation error near 1e-7 on this model
			// (it scales as h²: 6e-4 at h = 1e-2, 6e-6 at 1e-3); Param.Grad is float32.
			if r > 2e-6 || math.IsNaN(r) {
				t.Errorf("LoRA gradients vs finite differences: relative error %g", r)
			}
		})
	}
}

// With B = 0 the adapted model is the base model.
func TestLoRAZeroBIsBase(t *testing.T) {
	m := tinyModel(t, 0.3)
	params := loraParams(m, []string{"q_proj", "v_proj"}, 4, 0.3, 0, 5)
	base, err := New(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	adapted, err := New(m, Options{LoRA: &LoRA{Scale: 2, Dropout: 0.1, Params: params}})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	seqs := randomSeqs(rng, []int{7, 20}, m.Config.VocabSize)
	a, err := base.LastLogits(context.Background(), seqs, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := adapted.LastLogits(context.Background(), seqs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				t.Fatalf("seq %d logit %d: base %g, adapted with B=0 %g", i, j, a[i][j], b[i][j])
			}
		}
	}
	// And the gradient of B is not zero while A's is (B = 0 blocks it).
	if _, _, err := adapted.LossGrad(context.Background(), examples(rng, seqs, m.Config.VocabSize), 1); err != nil {
		t.Fatal(err)
	}
	for _, p := range params {
		nz := 0
		for _, g := range p.Grad {
			if g != 0 {
				nz++
			}
		}
		isB := p.Shape[1] == 4
		if isB && nz == 0 || !isB && nz != 0 {
			t.Errorf("%s: %d non-zero gradients", p.Name, nz)
		}
	}
}

func TestErrors(t *testing.T) {
	m := tinyModel(t, 0.02)
	if _, err := New(m, Options{DType: "int8"}); err == nil {
		t.Error("dtype int8 accepted")
	}
	bad := loraParams(m, []string{"q_proj"}, 4, 0.1, 0, 1)
	bad[0].Shape = []int{4, 7}
	if _, err := New(m, Options{LoRA: &LoRA{Params: bad}}); err == nil {
		t.Error("wrong LoRA shape accepted")
	}
	e, err := New(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.LastLogits(context.Background(), [][]int{{1, 40}}, nil); err == nil {
		t.Error("token outside the vocabulary accepted")
	}
	if _, err := e.LastLogits(context.Background(), [][]int{{}}, nil); err == nil {
		t.Error("empty sequence accepted")
	}
}

// A bf16 checkpoint runs and gives the f32 checkpoint's logits up to bf16 rounding of the weights.
func TestHalfPrecisionCheckpoint(t *testing.T) {
	var logits [][]float32
	for _, dt := range []string{"f32", "bf16", "f16"} {
		dir := filepath.Join(t.TempDir(), dt)
		if err := model.Init(dir, model.InitOptions{Hidden: 16, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 24, Vocab: 40, Seed: 7, Std: 0.3, DType: dt}); err != nil {
			t.Fatal(err)
		}
		m, err := model.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		e, err := New(m, Options{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := e.LastLogits(context.Background(), [][]int{{1, 5, 9, 30, 2}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
		logits = append(logits, l[0])
	}
	for k, tol := range map[int]float64{1: 0.03, 2: 0.005} {
		var d, n float64
		for j := range logits[0] {
			d += math.Abs(float64(logits[k][j] - logits[0][j]))
			n += math.Abs(float64(logits[0][j]))
		}
		if d/n > tol || d == 0 {
			t.Errorf("checkpoint %d: logits differ from f32 by %.3g relative (L1)", k, d/n)
		}
		t.Logf("checkpoint %d: relative L1 difference %.3g", k, d/n)
	}
}
