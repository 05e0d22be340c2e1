package cpucheck_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/trainer"
)

// loraSetup makes LoRA parameters (PEFT names, random A and B, B non-zero
// so that every path carries gradient) on the given modules of every
// listed layer, and the matching cuda.LoRAModuleRef list.
func loraSetup(cfg model.Config, r *rand.Rand, rank int, layers []int, modules []string) ([]*engine.Param, []cuda.LoRAModuleRef) {
	var params []*engine.Param
	var mods []cuda.LoRAModuleRef
	for _, l := range layers {
		for _, m := range modules {
			in, out := cfg.HiddenSize, cfg.HiddenSize
			part := "self_attn"
			switch m {
			case "q_proj":
				out = cfg.QDim()
			case "k_proj", "v_proj":
				out = cfg.KVDim()
			case "o_proj":
				in = cfg.QDim()
			case "gate_proj", "up_proj":
				out, part = cfg.IntermediateSize, "mlp"
			case "down_proj":
				in, part = cfg.IntermediateSize, "mlp"
			}
			rnd := func(n int, a float64) []float32 {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32((r.Float64()*2 - 1) * a)
				}
				return v
			}
			a, b := rnd(rank*in, 0.3), rnd(out*rank, 0.3)
			name := fmt.Sprintf("base_model.model.model.layers.%d.%s.%s.lora_", l, part, m)
			params = append(params,
				&engine.Param{Name: name + "A.weight", Shape: []int{rank, in}, Value: a, Grad: make([]float32, len(a))},
				&engine.Param{Name: name + "B.weight", Shape: []int{out, rank}, Value: b, Grad: make([]float32, len(b))})
			mods = append(mods, cuda.LoRAModuleRef{Layer: l, Module: m, Rank: rank, A: a, B: b})
		}
	}
	return params, mods
}

// TestLossGradRefMatchesCPUEngine runs one micro-batch of stories260K with
// LoRA adapters on every projection of three layers and dropout 0.1 through
// cuda.LossGradRef (the composition of the training-kernel references) and
// through the CPU engine's LossGrad in float64 (Gorgonia's autodiff over
// the same masks): the loss sum and every LoRA gradient must agree.
func TestLossGradRefMatchesCPUEngine(t *testing.T) {
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config
	r := rand.New(rand.NewPCG(21, 22))
	modules := []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
	params, mods := loraSetup(cfg, r, 2, []int{0, 2, 4}, modules)
	const scale, p, seed = 2.0, 0.1, uint64(777)
	batch := []engine.Example{
		{Tokens: []int{1, 403, 407, 261, 378, 9, 10}, Labels: []int{-100, -100, -100, -100, 9, 10, 2}},
		{Tokens: []int{1, 5, 9, 100, 200, 300, 400, 500, 7, 8, 9, 10, 11, 12},
			Labels: []int{-100, -100, -100, -100, -100, -100, -100, -100, -100, -100, -100, 12, 13, 2}},
		{Tokens: []int{1, 17, 33}, Labels: []int{-100, -100, -100}}, // no label: forward only
	}
	e, err := cpu.New(m, cpu.Options{DType: "float64", LoRA: &cpu.LoRA{Scale: scale, Dropout: p, Params: params}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	lossSum, nTok, err := e.LossGrad(context.Background(), batch, seed)
	if err != nil {
		t.Fatal(err)
	}
	// The masks LossGrad drew, packed per module.
	ins := make([]int, len(mods))
	for i, md := range mods {
		ins[i] = len(md.A) / md.Rank
	}
	lens := make([]int, len(batch))
	for i, ex := range batch {
		lens[i] = len(ex.Tokens)
	}
	masks := cpu.DropoutMasks(seed, p, ins, lens)
	for i := range mods {
		for _, mk := range masks[i] {
			for _, v := range mk {
				mods[i].Mask = append(mods[i].Mask, float32(v))
			}
		}
	}
	ref, err := cuda.LossGradRef(cfg, m.Tensor, cuda.F32, scale, mods, batch)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Tokens != nTok || math.Abs(ref.LossSum-lossSum) > 1e-6*lossSum {
		t.Errorf("loss: reference %v over %d tokens, CPU engine %v over %d", ref.LossSum, ref.Tokens, lossSum, nTok)
	}
	t.Logf("loss sum %.6f over %d tokens", lossSum, nTok)
	worst := 0.0
	for i, md := range mods {
		for j, got := range [][]float32{ref.DA[i], ref.DB[i]} {
			want := params[2*i+j].Grad
			e := cuda.RelErr(got, want)
			worst = max(worst, e)
			if !(e < 1e-4) {
				t.Errorf("layers.%d.%s %c: relative error %.3g", md.Layer, md.Module, "AB"[j], e)
			}
		}
	}
	t.Logf("largest relative error of a LoRA gradient: %.2e", worst)
}

// TestDropoutKeepRefMatchesCPU checks the masks dropout_mask reproduces
// (DropoutKeepRef, stream i+1, first draw at the example's packed row
// times the module width) against cpu.DropoutMasks element by element.
func TestDropoutKeepRefMatchesCPU(t *testing.T) {
	const seed, p = uint64(0xfeedbeef), 0.1
	ins := []int{16, 40, 8}
	lens := []int{3, 9, 1, 5}
	masks := cpu.DropoutMasks(seed, p, ins, lens)
	keep := float32(1 / (1 - p))
	for i, in := range ins {
		row := 0
		for b, n := range lens {
			got := cuda.DropoutKeepRef(seed, uint64(i)+1, int64(row*in), int64(n*in), p)
			for j, k := range got {
				want := float32(masks[i][b][j])
				if float32(k)*keep != want {
					t.Fatalf("module %d example %d element %d: keep %d, cpu mask %v", i, b, j, k, want)
				}
			}
			row += n
		}
	}
}

// TestAdamWRefMatchesTrainer runs the adamw kernel's reference (with
// AdamWConsts) and trainer.AdamW side by side for several steps: parameters
// and moments must be bit-identical.
func TestAdamWRefMatchesTrainer(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	const n = 1000
	const b1, b2, eps, wd = 0.9, 0.999, 1e-8, 0.01
	value := make([]float32, n)
	for i := range value {
		value[i] = float32(r.NormFloat64() * 0.1)
	}
	params := []*engine.Param{{Name: "p", Shape: []int{n}, Value: append([]float32(nil), value...), Grad: make([]float32, n)}}
	opt := trainer.NewAdamW(params, b1, b2, eps, wd)
	p, m, v := append([]float32(nil), value...), make([]float32, n), make([]float32, n)
	for step := 1; step <= 5; step++ {
		lr := 1e-3 * float64(step) // a schedule: lr changes every step
		for i := range params[0].Grad {
			params[0].Grad[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(6)-4)))
		}
		g := append([]float32(nil), params[0].Grad...)
		opt.Step(params, lr)
		decay, stepSize, bc2 := cuda.AdamWConsts(step, lr, b1, b2, wd)
		cuda.AdamWRef(p, m, v, g, b1, b2, eps, decay, stepSize, bc2)
		for i := range p {
			if math.Float32bits(p[i]) != math.Float32bits(params[0].Value[i]) ||
				math.Float32bits(m[i]) != math.Float32bits(opt.M[0][i]) || math.Float32bits(v[i]) != math.Float32bits(opt.V[0][i]) {
				t.Fatalf("step %d element %d: reference p %v m %v v %v, trainer p %v m %v v %v", step, i,
					p[i], m[i], v[i], params[0].Value[i], opt.M[0][i], opt.V[0][i])
			}
		}
	}
}
