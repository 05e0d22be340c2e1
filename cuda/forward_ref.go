package cuda

import (
	"fmt"

	"github.com/rella-project/rella/model"
)

// ForwardRef runs the LLaMA decoder on the CPU by composing the kernel
// references, exactly in the order the GPU Engine launches the kernels, and
// returns for each sequence the logits at its last token (all vocabulary
// rows) and the final-norm hidden states averaged over its tokens. Weights
// are rounded to w's precision first (F32 keeps them), so that a comparison
// with the GPU engine isolates the engine's own rounding. It is slow: meant
// for tiny models in tests and the GPU self-test.
func ForwardRef(cfg model.Config, tensor func(name string) ([]float32, error), w Elem, seqs [][]int) (last, mean [][]float32, err error) {
	get := func(name string) ([]float32, error) {
		v, err := tensor(name)
		if err != nil {
			return nil, fmt.Errorf("cuda: forward reference: %w", err)
		}
		return w.Round(v), nil
	}
	d, H, KV, hd := cfg.HiddenSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	lens := make([]int, len(seqs))
	var ids []int
	for i, s := range seqs {
		lens[i] = len(s)
		ids = append(ids, s...)
	}
	cu := Offsets(lens)
	pos := Positions(cu)
	n := len(ids)
	emb, err := get("model.embed_tokens.weight")
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		if id < 0 || id >= cfg.VocabSize {
			return nil, nil, fmt.Errorf("cuda: forward reference: token id %d outside vocabulary of %d", id, cfg.VocabSize)
		}
	}
	x := EmbedRef(emb, d, ids)
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		names := []string{"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
			"post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
		ws := make([][]float32, len(names))
		for i, nm := range names {
			if ws[i], err = get(p + nm + ".weight"); err != nil {
				return nil, nil, err
			}
		}
		h := RMSNormRef(x, ws[0], n, d, cfg.RMSNormEps)
		q := RoPERef(linearRef(h, ws[1], n, d), pos, H, hd, cfg.RopeTheta)
		k := RoPERef(linearRef(h, ws[2], n, d), pos, KV, hd, cfg.RopeTheta)
		v := linearRef(h, ws[3], n, d)
		a := AttentionRef(q, k, v, cu, H, KV, hd)
		x = ResidualAddRef(x, linearRef(a, ws[4], n, H*hd))
		h = RMSNormRef(x, ws[5], n, d, cfg.RMSNormEps)
		g := SwiGLURef(linearRef(h, ws[6], n, d), linearRef(h, ws[7], n, d))
		x = ResidualAddRef(x, linearRef(g, ws[8], n, cfg.IntermediateSize))
	}
	norm, err := get("model.norm.weight")
	if err != nil {
		return nil, nil, err
	}
	head, err := get("lm_head.weight")
	if err != nil {
		return nil, nil, err
	}
	B := len(seqs)
	hl := RMSNormRef(GatherLastRef(x, cu, d), norm, B, d, cfg.RMSNormEps)
	all := make([]int, cfg.VocabSize)
	for i := range all {
		all[i] = i
	}
	logits := LMHeadRowsRef(hl, head, all, d)
	mp := MeanPoolRef(RMSNormRef(x, norm, n, d, cfg.RMSNormEps), cu, d)
	for b := 0; b < B; b++ {
		last = append(last, logits[b*cfg.VocabSize:(b+1)*cfg.VocabSize])
		mean = append(mean, mp[b*d:(b+1)*d])
	}
	return last, mean, nil
}

// linearRef returns x [n, in] times wᵀ for a weight w [out, in] stored as HF
// stores projections: [n, out].
func linearRef(x, w []float32, n, in int) []float32 {
	out := len(w) / in
	y := make([]float32, n*out)
	for r := 0; r < n; r++ {
		xr := x[r*in : (r+1)*in]
		for o := 0; o < out; o++ {
			wo := w[o*in : (o+1)*in]
			var s float64
			for c := range xr {
				s += float64(xr[c]) * float64(wo[c])
			}
			y[r*out+o] = float32(s)
		}
	}
	return y
}
