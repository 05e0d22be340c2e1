package cuda

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// TrainOptions configure the GPU Trainer (engine.Trainer): the engine's
// Options plus the LoRA adapters, as cpu.Options and cpu.LoRA describe them.
type TrainOptions struct {
	Options
	// Scale is the LoRA scale alpha/r.
	Scale float64
	// Dropout is the LoRA dropout probability on the adapters' inputs,
	// applied in LossGrad only, with cpu.DropoutMasks' masks.
	Dropout float64
	// Params are the LoRA tensors, named as PEFT names them
	// (base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight).
	Params []*engine.Param
	// VocabChunk is the number of LM-head rows per cross-entropy chunk
	// (0 means DefaultVocabChunk).
	VocabChunk int
	// MaxLabelled bounds the labelled tokens of one LossGrad call (the
	// pipeline's micro-batch × answer tokens), for the memory check; 0
	// assumes every token of a pass is labelled.
	MaxLabelled int
	// PassTokens bounds the tokens of one LossGrad pass (a micro-batch is
	// split into passes of at most this many; a longer example runs
	// alone); 0 means Options.MaxTokens. The pipeline sets it to micro-batch
	// × longest example, so the training workspace is planned for what
	// training runs, not for the scoring passes.
	PassTokens int
}

// passTokens resolves PassTokens.
func (o TrainOptions) passTokens() int {
	switch {
	case o.PassTokens > 0:
		return o.PassTokens
	case o.MaxTokens > 0:
		return o.MaxTokens
	}
	return DefaultMaxTokens
}

// TrainReserve is the device memory NewTrainer asks NewEngineWith to keep
// free beyond the weights and the forward workspace: the training
// workspace of a pass of Options.MaxTokens tokens (MaxLabelled of them
// labelled) for the adapters of opts.Params.
func TrainReserve(cfg model.Config, opts TrainOptions) (int64, error) {
	specs, err := parseLoRA(cfg, opts.Params)
	if err != nil {
		return 0, err
	}
	e, ok, err := ParsePrecision(opts.Precision)
	if err != nil {
		return 0, err
	}
	if !ok {
		e = F16 // the device's natural half type: bf16 or fp16, 2 bytes either way
	}
	tokens := opts.passTokens()
	labelled := tokens
	if opts.MaxLabelled > 0 {
		labelled = min(opts.MaxLabelled, tokens)
	}
	vc := opts.VocabChunk
	if vc <= 0 {
		vc = DefaultVocabChunk
	}
	return trainWorkspace(cfg, tokens, labelled, min(vc, cfg.VocabSize), e, specs), nil
}

// DefaultVocabChunk is the default number of vocabulary rows whose logits
// exist at once in the cross-entropy.
const DefaultVocabChunk = 8192

// loraSpec is one adapter found among the parameters.
type loraSpec struct {
	layer   int
	module  string // q_proj ... down_proj
	in, out int
	rank    int
	a, b    *engine.Param
}

var loraParamName = regexp.MustCompile(`^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$`)

var moduleGroup = map[string]string{"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
	"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}

// parseLoRA pairs the A and B tensors of params into adapters and checks
// their shapes against cfg. Adapter i is the i-th distinct (layer, module)
// in the order its lora_A or lora_B first appears, the order in which
// cpu.DropoutMasks numbers the modules (adapter i draws from stream i+1).
func parseLoRA(cfg model.Config, params []*engine.Param) ([]loraSpec, error) {
	type key struct {
		layer  int
		module string
	}
	at := map[key]int{}
	var specs []loraSpec
	for _, p := range params {
		sm := loraParamName.FindStringSubmatch(p.Name)
		if sm == nil {
			return nil, fmt.Errorf("cuda: lora parameter %q is not a PEFT layers.N.(self_attn|mlp).X_proj.lora_A|B.weight name", p.Name)
		}
		layer, err := strconv.Atoi(sm[1])
		if err != nil || layer >= cfg.NumHiddenLayers || moduleGroup[sm[3]] != sm[2] {
			return nil, fmt.Errorf("cuda: lora parameter %q names no module of this model", p.Name)
		}
		k := key{layer, sm[3]}
		i, ok := at[k]
		if !ok {
			in, out, err := moduleDims(cfg, sm[3])
			if err != nil {
				return nil, err
			}
			i = len(specs)
			at[k] = i
			specs = append(specs, loraSpec{layer: layer, module: sm[3], in: in, out: out})
		}
		s := &specs[i]
		if sm[4] == "A" {
			if s.a != nil {
				return nil, fmt.Errorf("cuda: lora parameter %q appears twice", p.Name)
			}
			s.a = p
		} else {
			if s.b != nil {
				return nil, fmt.Errorf("cuda: lora parameter %q appears twice", p.Name)
			}
			s.b = p
		}
	}
	for i := range specs {
		s := &specs[i]
		if s.a == nil || s.b == nil {
			return nil, fmt.Errorf("cuda: lora module layers.%d.%s lacks its lora_A or lora_B", s.layer, s.module)
		}
		if len(s.a.Shape) != 2 || len(s.b.Shape) != 2 || s.a.Shape[1] != s.in || s.b.Shape[0] != s.out || s.b.Shape[1] != s.a.Shape[0] ||
			s.a.Shape[0] <= 0 {
			return nil, fmt.Errorf("cuda: lora module layers.%d.%s: A %v and B %v do not fit a [%d, %d] weight", s.layer, s.module, s.a.Shape, s.b.Shape, s.out, s.in)
		}
		s.rank = s.a.Shape[0]
		for _, p := range []*engine.Param{s.a, s.b} {
			if n := p.Shape[0] * p.Shape[1]; len(p.Value) != n || len(p.Grad) != n {
				return nil, fmt.Errorf("cuda: lora parameter %q: shape %v with %d values and %d gradients", p.Name, p.Shape, len(p.Value), len(p.Grad))
			}
		}
	}
	return specs, nil
}

// TrainWorkspaceBytes estimates the device memory of one LossGrad pass of
// tokens tokens with labelled labelled rows, beyond the weights, for the
// LoRA parameters params (PEFT names): each layer's float input kept for
// the recomputation, one layer's recomputed activations and gradients, the
// adapters' buffers, and one vocabulary chunk of the cross-entropy.
func TrainWorkspaceBytes(cfg model.Config, tokens, labelled, vocabChunk int, e Elem, params []*engine.Param) (int64, error) {
	specs, err := parseLoRA(cfg, params)
	if err != nil {
		return 0, err
	}
	return trainWorkspace(cfg, tokens, labelled, vocabChunk, e, specs), nil
}

// trainWorkspace is TrainWorkspaceBytes for parsed adapters.
func trainWorkspace(cfg model.Config, tokens, R, vocabChunk int, e Elem, specs []loraSpec) int64 {
	n, es := int64(tokens), int64(e.Size())
	d, q, kv, ff := int64(cfg.HiddenSize), int64(cfg.QDim()), int64(cfg.KVDim()), int64(cfg.IntermediateSize)
	L, H := int64(cfg.NumHiddenLayers), int64(cfg.NumAttentionHeads)
	inputs := (L + 1) * n * d * 4
	layer := n*(d+q+2*kv+q+d+d+3*ff)*es + n*H*4 + n*d*4                       // n1, q, k, v, att, n2, y, g, u, act; lse; xmid
	grads := n*d*es + n*ff*4 + n*d*4 + n*q*4 + n*q*es + n*H*4 + n*(q+2*kv)*es // dyE, dact, dn, datt, dattE, dd, dq, dk, dv
	perLayer := map[int]int64{}
	var adapters int64
	for _, s := range specs {
		r := int64(s.rank)
		adapters += (int64(s.in)*r + int64(s.out)*r) * (es + 4) // elem copies and float gradients
		perLayer[s.layer] += n*int64(s.in)*(1+es+4) + 2*n*r*es  // keep flags, dropped-out input, dxd; u, du
	}
	var worst int64
	for _, b := range perLayer {
		worst = max(worst, b)
	}
	R64, vc := int64(R), int64(vocabChunk)
	ce := R64*vc*(4+es) + R64*d*(4+es+4+4) + 6*R64*4
	ints := n*8 + n*4 + R64*8 + 64
	return inputs + layer + grads + worst + adapters + ce + ints
}
