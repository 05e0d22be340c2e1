//go:build rellagpu

package cuda

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

// TestTrainerStoriesOnDevice runs one LossGrad of the GPU Trainer on
// stories260K (LoRA on every projection of layers 0, 2 and 4, dropout 0.1,
// packed examples, one without labels, a pass split by MaxTokens) in f32
// and in the device's half type, against LossGradRef with the same masks
// (LossGradRef agrees with the Gorgonia CPU engine in float64: see
// cpucheck): loss sum and every LoRA gradient within 1e-4 (f32) or 2e-2
// (half) relative.
func TestTrainerStoriesOnDevice(t *testing.T) {
	if _, err := DeviceCount(); err != nil {
		skipOrFail(t, err)
	}
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)
	const scale, p, rank = 2.0, 0.1, 4
	var params []*engine.Param
	for _, l := range []int{0, 2, 4} {
		for _, mod := range []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} {
			in, out, _ := moduleDims(cfg, mod)
			group := moduleGroup[mod]
			mk := func(ab string, rows, cols int) *engine.Param {
				v := make([]float32, rows*cols)
				for i := range v {
					v[i] = float32(r.NormFloat64() * 0.2)
				}
				return &engine.Param{Name: fmt.Sprintf("base_model.model.model.layers.%d.%s.%s.lora_%s.weight", l, group, mod, ab),
					Shape: []int{rows, cols}, Value: v, Grad: make([]float32, len(v))}
			}
			params = append(params, mk("A", rank, in), mk("B", out, rank))
		}
	}
	batch := make([]engine.Example, 5)
	for i := range batch {
		n := 5 + r.IntN(60)
		ex := engine.Example{Tokens: make([]int, n), Labels: make([]int, n)}
		for j := range ex.Tokens {
			ex.Tokens[j] = r.IntN(cfg.VocabSize)
			ex.Labels[j] = engine.IgnoreIndex
			if i != 2 && j >= n/2 {
				ex.Labels[j] = r.IntN(cfg.VocabSize)
			}
		}
		batch[i] = ex
	}
	dropSeed := r.Uint64()
	for _, prec := range []string{"f32", ""} {
		for _, pr := range params {
			clear(pr.Grad)
		}
		tr, err := NewTrainer(m, TrainOptions{Options: Options{Precision: prec, MaxTokens: 100}, Scale: scale, Dropout: p,
			Params: params, VocabChunk: 200}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := tr.Elem()
		lossSum, nTok, err := tr.LossGrad(context.Background(), batch, dropSeed)
		tr.Close()
		if err != nil {
			t.Fatalf("%v: %v", e, err)
		}
		specs, err := parseLoRA(cfg, params)
		if err != nil {
			t.Fatal(err)
		}
		var mods []LoRAModuleRef
		for i, s := range specs {
			total := 0
			for _, ex := range batch {
				total += len(ex.Tokens)
			}
			var mask []float32
			for _, k := range DropoutKeepRef(dropSeed, uint64(i)+1, 0, int64(total*s.in), p) {
				mask = append(mask, float32(k)*keepScale(p))
			}
			mods = append(mods, LoRAModuleRef{Layer: s.layer, Module: s.module, Rank: s.rank, A: e.Round(s.a.Value), B: e.Round(s.b.Value), Mask: mask})
		}
		ref, err := LossGradRef(cfg, m.Tensor, e, scale, mods, batch)
		if err != nil {
			t.Fatal(err)
		}
		tol := 1e-4
		if e != F32 {
			tol = 2e-2
		}
		if nTok != ref.Tokens || !(abs(lossSum-ref.LossSum) <= tol*ref.LossSum) {
			t.Errorf("%v: loss %v over %d tokens, reference %v over %d", e, lossSum, nTok, ref.LossSum, ref.Tokens)
		}
		worst := 0.0
		for i, s := range specs {
			for j, pr := range []*engine.Param{s.a, s.b} {
				want := [][]float32{ref.DA[i], ref.DB[i]}[j]
				rel := RelErr(pr.Grad, want)
				worst = max(worst, rel)
				if !(rel <= tol) {
					t.Errorf("%v: layers.%d.%s %c: relative error %.3g above %g", e, s.layer, s.module, "AB"[j], rel, tol)
				}
			}
		}
		t.Logf("%v: loss %.5f over %d tokens (reference %.5f); largest LoRA gradient relative error %.2e", e, lossSum, nTok, ref.LossSum, worst)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
