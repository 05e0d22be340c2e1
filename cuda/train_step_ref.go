package cuda

import (
	"fmt"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// LoRAModuleRef is one adapter of LossGradRef: y = x Wᵀ + Scale·(Mask∘x) Aᵀ Bᵀ
// on the projection Module ("q_proj" ... "down_proj") of layer Layer.
type LoRAModuleRef struct {
	Layer  int
	Module string
	Rank   int
	A, B   []float32 // [Rank, in], [out, Rank]
	// Mask holds the inverted-dropout factors (0 or 1/(1−p)) of the module's
	// packed input [N, in] (the examples' tokens one after another), nil for
	// no dropout: cpu.DropoutMasks' masks of the module, concatenated.
	Mask []float32
}

// StepRef is what LossGradRef returns: the summed cross-entropy over the
// labelled tokens, their number, and the gradients of that sum with respect
// to each module's A and B (in the order of the modules given).
type StepRef struct {
	LossSum float64
	Tokens  int
	DA, DB  [][]float32
}

// moduleDims returns the input and output widths of a projection.
func moduleDims(cfg model.Config, module string) (in, out int, err error) {
	d, q, kv, I := cfg.HiddenSize, cfg.QDim(), cfg.KVDim(), cfg.IntermediateSize
	switch module {
	case "q_proj":
		return d, q, nil
	case "k_proj", "v_proj":
		return d, kv, nil
	case "o_proj":
		return q, d, nil
	case "gate_proj", "up_proj":
		return d, I, nil
	case "down_proj":
		return I, d, nil
	}
	return 0, 0, fmt.Errorf("cuda: training reference: unknown module %q", module)
}

// LossGradRef runs one training micro-batch on the CPU by composing the
// kernel references (forward: ref.go; backward: train_ref.go) in the order
// a GPU training step runs them: the sequences packed, every layer's
// activations kept, the loss only at labelled rows, the frozen base's input
// gradients, the LoRA gradients. Weights are rounded to w's precision first
// (F32 keeps them). It is slow: meant for tiny models in tests.
func LossGradRef(cfg model.Config, tensor func(name string) ([]float32, error), w Elem, scale float64,
	mods []LoRAModuleRef, batch []engine.Example) (*StepRef, error) {
	get := func(name string) ([]float32, error) {
		v, err := tensor(name)
		if err != nil {
			return nil, fmt.Errorf("cuda: training reference: %w", err)
		}
		return w.Round(v), nil
	}
	d, H, KV, hd := cfg.HiddenSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	var ids, idx, labels, lens []int
	for i, ex := range batch {
		if len(ex.Labels) != len(ex.Tokens) {
			return nil, fmt.Errorf("cuda: training reference: example %d has %d tokens and %d labels", i, len(ex.Tokens), len(ex.Labels))
		}
		for t, id := range ex.Tokens {
			if id < 0 || id >= cfg.VocabSize {
				return nil, fmt.Errorf("cuda: training reference: example %d: token %d outside the vocabulary", i, id)
			}
			if l := ex.Labels[t]; l != engine.IgnoreIndex {
				if l < 0 || l >= cfg.VocabSize {
					return nil, fmt.Errorf("cuda: training reference: example %d: label %d outside the vocabulary", i, l)
				}
				idx, labels = append(idx, len(ids)), append(labels, l)
			}
			ids = append(ids, id)
		}
		lens = append(lens, len(ex.Tokens))
	}
	cu := Offsets(lens)
	pos := Positions(cu)
	n := len(ids)
	byKey := map[[2]any]int{}
	res := &StepRef{Tokens: len(idx)}
	for i, m := range mods {
		in, out, err := moduleDims(cfg, m.Module)
		if err != nil {
			return nil, err
		}
		if m.Layer < 0 || m.Layer >= cfg.NumHiddenLayers || len(m.A) != m.Rank*in || len(m.B) != out*m.Rank ||
			(m.Mask != nil && len(m.Mask) != n*in) {
			return nil, fmt.Errorf("cuda: training reference: module %d (layers.%d.%s) has shapes that do not fit", i, m.Layer, m.Module)
		}
		byKey[[2]any{m.Layer, m.Module}] = i
		res.DA = append(res.DA, make([]float32, len(m.A)))
		res.DB = append(res.DB, make([]float32, len(m.B)))
	}
	emb, err := get("model.embed_tokens.weight")
	if err != nil {
		return nil, err
	}
	type layerW struct {
		ln1, ln2 []float32
		proj     map[string][]float32
	}
	type layerA struct{ x, n1, q, k, v, a, xmid, n2, g, u, act []float32 }
	lw := make([]layerW, cfg.NumHiddenLayers)
	acts := make([]layerA, cfg.NumHiddenLayers)
	proj := func(x []float32, l int, module string) []float32 {
		in, out, _ := moduleDims(cfg, module)
		y := linearRef(x, lw[l].proj[module], n, in)
		if i, ok := byKey[[2]any{l, module}]; ok {
			m := mods[i]
			y = ResidualAddRef(y, LoRAFwdRef(x, m.A, m.B, m.Mask, n, in, m.Rank, out, scale))
		}
		return y
	}
	// projBwd returns the gradient of the projection's input given dy,
	// adding the adapter's gradients into res.
	projBwd := func(dy, x []float32, l int, module string) []float32 {
		in, out, _ := moduleDims(cfg, module)
		wt := lw[l].proj[module]
		dx := make([]float64, n*in)
		for t := 0; t < n; t++ {
			for o := 0; o < out; o++ {
				g := float64(dy[t*out+o])
				for c := 0; c < in; c++ {
					dx[t*in+c] += g * float64(wt[o*in+c])
				}
			}
		}
		dx32 := f32s(dx)
		if i, ok := byKey[[2]any{l, module}]; ok {
			m := mods[i]
			da, db, dxl := LoRABwdRef(x, m.A, m.B, m.Mask, dy, n, in, m.Rank, out, scale)
			res.DA[i] = ResidualAddRef(res.DA[i], da)
			res.DB[i] = ResidualAddRef(res.DB[i], db)
			dx32 = ResidualAddRef(dx32, dxl)
		}
		return dx32
	}
	x := EmbedRef(emb, d, ids)
	for l := range lw {
		p := fmt.Sprintf("model.layers.%d.", l)
		if lw[l].ln1, err = get(p + "input_layernorm.weight"); err != nil {
			return nil, err
		}
		if lw[l].ln2, err = get(p + "post_attention_layernorm.weight"); err != nil {
			return nil, err
		}
		lw[l].proj = map[string][]float32{}
		for _, nm := range [][2]string{{"self_attn", "q_proj"}, {"self_attn", "k_proj"}, {"self_attn", "v_proj"},
			{"self_attn", "o_proj"}, {"mlp", "gate_proj"}, {"mlp", "up_proj"}, {"mlp", "down_proj"}} {
			if lw[l].proj[nm[1]], err = get(p + nm[0] + "." + nm[1] + ".weight"); err != nil {
				return nil, err
			}
		}
		a := &acts[l]
		a.x = x
		a.n1 = RMSNormRef(x, lw[l].ln1, n, d, cfg.RMSNormEps)
		a.q = RoPERef(proj(a.n1, l, "q_proj"), pos, H, hd, cfg.RopeTheta)
		a.k = RoPERef(proj(a.n1, l, "k_proj"), pos, KV, hd, cfg.RopeTheta)
		a.v = proj(a.n1, l, "v_proj")
		a.a = AttentionRef(a.q, a.k, a.v, cu, H, KV, hd)
		a.xmid = ResidualAddRef(x, proj(a.a, l, "o_proj"))
		a.n2 = RMSNormRef(a.xmid, lw[l].ln2, n, d, cfg.RMSNormEps)
		a.g = proj(a.n2, l, "gate_proj")
		a.u = proj(a.n2, l, "up_proj")
		a.act = SwiGLURef(a.g, a.u)
		x = ResidualAddRef(a.xmid, proj(a.act, l, "down_proj"))
	}
	norm, err := get("model.norm.weight")
	if err != nil {
		return nil, err
	}
	head, err := get("lm_head.weight")
	if err != nil {
		return nil, err
	}
	R := len(idx)
	xr := make([]float32, R*d)
	for r, row := range idx {
		copy(xr[r*d:(r+1)*d], x[row*d:(row+1)*d])
	}
	loss, dh := CrossEntropyRef(RMSNormRef(xr, norm, R, d, cfg.RMSNormEps), head, labels, d, 1)
	for _, v := range loss {
		res.LossSum += v
	}
	dxr := RMSNormBwdRef(xr, norm, dh, R, d, cfg.RMSNormEps)
	dx := make([]float32, n*d)
	for r, row := range idx {
		copy(dx[row*d:(row+1)*d], dxr[r*d:(r+1)*d])
	}
	for l := len(lw) - 1; l >= 0; l-- {
		a := &acts[l]
		dact := projBwd(dx, a.act, l, "down_proj")
		dg, du := SwiGLUBwdRef(a.g, a.u, dact)
		dn2 := ResidualAddRef(projBwd(dg, a.n2, l, "gate_proj"), projBwd(du, a.n2, l, "up_proj"))
		dxmid := ResidualAddRef(dx, RMSNormBwdRef(a.xmid, lw[l].ln2, dn2, n, d, cfg.RMSNormEps))
		da := projBwd(dxmid, a.a, l, "o_proj")
		dq, dk, dv := AttentionBwdRef(a.q, a.k, a.v, da, cu, H, KV, hd)
		dn1 := projBwd(RoPEBwdRef(dq, pos, H, hd, cfg.RopeTheta), a.n1, l, "q_proj")
		dn1 = ResidualAddRef(dn1, projBwd(RoPEBwdRef(dk, pos, KV, hd, cfg.RopeTheta), a.n1, l, "k_proj"))
		dn1 = ResidualAddRef(dn1, projBwd(dv, a.n1, l, "v_proj"))
		dx = ResidualAddRef(dxmid, RMSNormBwdRef(a.x, lw[l].ln1, dn1, n, d, cfg.RMSNormEps))
	}
	return res, nil
}
