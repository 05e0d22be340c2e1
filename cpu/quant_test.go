package cpu

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/prompt"
	"github.com/rella-project/rella/safetensors"
	"github.com/rella-project/rella/tokenizer"
)

// pYes is ReLLa's score: softmax([l_No, l_Yes])[1].
func pYes(l []float32) float64 { return 1 / (1 + math.Exp(float64(l[0])-float64(l[1]))) }

// TestInt8ScoringRealPrompts scores real ML-1M prompts (the first 48 test
// samples, five most recent history items, the authors' template) with
// the real LLaMA tokenizer on tiny-vicuna-bin (fp16 Vicuna-layout shards)
// through the engine unquantised and with model.quantize int8: every
// P(Yes) must stay within 0.02 of the unquantised one (the bound)
// and not all of them may be identical (the quantisation must reach the
// result). The worst and mean differences are logged.
func TestInt8ScoringRealPrompts(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 487,650 ML-1M ratings")
	}
	src := testenv.Shared(t, "fixtures/tiny-vicuna-bin")
	// The fixture's fp16 weights as safetensors (model.fp16.safetensors.ref)
	// beside its config and tokenizer.
	mdir := t.TempDir()
	for from, to := range map[string]string{"model.fp16.safetensors.ref": "model.safetensors", "config.json": "config.json",
		"tokenizer.model": "tokenizer.model", "tokenizer_config.json": "tokenizer_config.json", "special_tokens_map.json": "special_tokens_map.json"} {
		if err := os.Symlink(filepath.Join(src, from), filepath.Join(mdir, to)); err != nil {
			t.Fatal(err)
		}
	}
	ddir := testenv.Shared(t, "data/ml-1m")
	opts := data.DefaultOptions()
	opts.Dataset, opts.Dir, opts.HistoryLen, opts.MinHistory = data.ML1M, ddir, 5, 5
	ds, _, err := data.Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := prompt.New(data.ML1M, prompt.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(mdir)
	if err != nil {
		t.Fatal(err)
	}
	yes, ok1 := tok.PieceID("▁Yes")
	no, ok2 := tok.PieceID("▁No")
	if !ok1 || !ok2 {
		t.Fatal("no ▁Yes/▁No pieces")
	}
	var seqs [][]int
	var hist []int32
	var buf []byte
	for _, s := range ds.Test[:min(48, len(ds.Test))] {
		hist = prompt.Recent{}.Select(s, 5, hist)
		buf = b.AppendPrompt(buf[:0], ds, s, hist)
		seqs = append(seqs, tok.Encode(string(buf), true))
	}
	m, err := model.Load(mdir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	score := func(q string) []float64 {
		e, err := New(m, Options{Quantize: q, MaxBatch: 8})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		ls, err := e.LastLogits(context.Background(), seqs, []int{no, yes})
		if err != nil {
			t.Fatal(err)
		}
		p := make([]float64, len(ls))
		for i, l := range ls {
			p[i] = pYes(l)
		}
		return p
	}
	ref, got := score(""), score(model.QuantInt8)
	var worst, mean float64
	differ := 0
	for i := range ref {
		d := math.Abs(got[i] - ref[i])
		worst, mean = max(worst, d), mean+d/float64(len(ref))
		if got[i] != ref[i] {
			differ++
		}
	}
	t.Logf("%d prompts (%d-%d tokens): int8 vs unquantised P(Yes): worst |Δ| %.2e, mean %.2e, %d differ; P(Yes) range of the reference %.4f-%.4f",
		len(seqs), len(seqs[0]), len(seqs[len(seqs)-1]), worst, mean, differ, minOf(ref), maxOf(ref))
	if !(worst <= 0.02) {
		t.Errorf("int8 P(Yes) differs from the unquantised one by up to %.4f, bound 0.02", worst)
	}
	if differ == 0 {
		t.Error("int8 scoring is identical to the unquantised one: the quantisation did not reach the engine")
	}
}

// TestInt8TrainedModelLogits: on a trained model (stories260K, F32) the
// int8 engine's last-position logits stay close to the unquantised ones
// (relative error below 5%; measured 0.68%) and differ from them; other
// model.quantize values are refused.
func TestInt8TrainedModelLogits(t *testing.T) {
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	seqs := [][]int{{1, 403, 407, 261, 378, 432, 383, 286, 261, 376}, {1, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337}}
	logits := func(q string) []float32 {
		e, err := New(m, Options{Quantize: q})
		if err != nil {
			t.Fatal(err)
		}
		ls, err := e.LastLogits(context.Background(), seqs, nil)
		if err != nil {
			t.Fatal(err)
		}
		return append(ls[0], ls[1]...)
	}
	ref, got := logits(""), logits("int8")
	var num, den float64
	same := true
	for i := range ref {
		d := float64(got[i] - ref[i])
		num, den = num+d*d, den+float64(ref[i])*float64(ref[i])
		same = same && got[i] == ref[i]
	}
	rel := math.Sqrt(num / den)
	t.Logf("stories260K last logits, int8 vs f32: relative error %.3e", rel)
	if !(rel < 0.05) || same {
		t.Errorf("int8 logits: relative error %.3g (bound 0.05), identical %v", rel, same)
	}
	if _, err := New(m, Options{Quantize: "int4"}); err == nil {
		t.Error("quantize int4 accepted")
	}
}

func minOf(v []float64) float64 {
	m := math.Inf(1)
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// TestInt8Training: the int8 engine's LossGrad (the adapters train on the
// quantised base) is bit for bit the engine's LossGrad on a checkpoint
// that stores the dequantised projection weights, and differs from the
// unquantised one.
func TestInt8Training(t *testing.T) {
	m := tinyModel(t, 0.2)
	dir := filepath.Join(t.TempDir(), "dequantised")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgJSON, err := os.ReadFile(filepath.Join(m.Dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfgJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	var tensors []safetensors.Tensor
	for name, shape := range model.TensorShapes(m.Config) {
		v, err := m.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if model.Quantized(name) {
			q, err := m.QuantizedTensor(name)
			if err != nil {
				t.Fatal(err)
			}
			v = q.Dequantize()
		}
		tensors = append(tensors, safetensors.F32(name, shape, v))
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	dq, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dq.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	batch := examples(rng, randomSeqs(rng, []int{9, 14, 5}, m.Config.VocabSize), m.Config.VocabSize)
	run := func(mm *model.Model, q string) (float64, []float32) {
		ps := loraParams(m, []string{"q_proj", "v_proj", "down_proj"}, 2, 0.1, 0.1, 9)
		e, err := New(mm, Options{Quantize: q, LoRA: &LoRA{Scale: 2, Params: ps}})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		loss, _, err := e.LossGrad(context.Background(), batch, 1)
		if err != nil {
			t.Fatal(err)
		}
		var g []float32
		for _, p := range ps {
			g = append(g, p.Grad...)
		}
		return loss, g
	}
	l8, g8 := run(m, model.QuantInt8)
	ld, gd := run(dq, "")
	l0, g0 := run(m, "")
	if math.Float64bits(l8) != math.Float64bits(ld) {
		t.Errorf("int8 loss %v, stored-dequantised %v", l8, ld)
	}
	for i := range g8 {
		if math.Float32bits(g8[i]) != math.Float32bits(gd[i]) {
			t.Fatalf("grad %d: int8 %v, stored-dequantised %v", i, g8[i], gd[i])
		}
	}
	same := l8 == l0
	for i := range g8 {
		same = same && g8[i] == g0[i]
	}
	if same {
		t.Error("int8 training equals unquantised training")
	}
	t.Logf("loss int8 %.6f, unquantised %.6f", l8, l0)
}
