// Package lora describes LoRA adapters the way Hugging Face PEFT does: the
// options (rank, alpha, dropout, target modules), the trainable A and B
// matrices of every targeted projection, their initialisation, and the
// adapter folder format (adapter_config.json + adapter_model.safetensors)
// that peft.PeftModel.from_pretrained loads.
//
// For a targeted linear layer y = W x with W of shape [out, in], LoRA adds
// Scale() * B (A dropout(x)) with A of shape [r, in] and B of shape [out, r].
package lora

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/rella-project/rella/engine"
)

// Options are the LoRA hyper-parameters (yaml section `lora:`).
type Options struct {
	R             int      `yaml:"lora_r" json:"r"`                           // rank
	Alpha         float64  `yaml:"lora_alpha" json:"lora_alpha"`              // scale numerator: the update is multiplied by Alpha/R
	Dropout       float64  `yaml:"lora_dropout" json:"lora_dropout"`          // dropout probability on the LoRA input
	TargetModules []string `yaml:"lora_target_modules" json:"target_modules"` // projection names, e.g. q_proj
}

// DefaultOptions returns the ReLLa settings: rank 8, alpha 16, dropout 0.05,
// on q_proj and v_proj (RELLA.md section 5).
func DefaultOptions() Options {
	return Options{R: 8, Alpha: 16, Dropout: 0.05, TargetModules: []string{"q_proj", "v_proj"}}
}

// modules lists the LLaMA projections an adapter may target, in the order
// they appear inside a decoder layer.
var modules = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// AllowedModules returns the projection names Options.TargetModules may hold.
func AllowedModules() []string { return append([]string(nil), modules...) }

// Validate reports the first invalid option, naming its yaml key.
func (o Options) Validate() error {
	if o.R < 1 {
		return fmt.Errorf("lora.lora_r: must be at least 1, got %d", o.R)
	}
	if !(o.Alpha > 0) || math.IsInf(o.Alpha, 0) {
		return fmt.Errorf("lora.lora_alpha: must be a positive number, got %v", o.Alpha)
	}
	if !(o.Dropout >= 0 && o.Dropout < 1) {
		return fmt.Errorf("lora.lora_dropout: must be in [0, 1), got %v", o.Dropout)
	}
	if len(o.TargetModules) == 0 {
		return fmt.Errorf("lora.lora_target_modules: must name at least one of %s", strings.Join(modules, ","))
	}
	seen := map[string]bool{}
	for _, m := range o.TargetModules {
		if moduleIndex(m) < 0 {
			return fmt.Errorf("lora.lora_target_modules: unknown module %q (allowed: %s)", m, strings.Join(modules, ","))
		}
		if seen[m] {
			return fmt.Errorf("lora.lora_target_modules: module %q listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// Scale returns the factor applied to the LoRA update, Alpha / R.
func (o Options) Scale() float64 { return o.Alpha / float64(o.R) }

func moduleIndex(m string) int {
	for i, n := range modules {
		if n == m {
			return i
		}
	}
	return -1
}

// Target is one linear layer that gets an adapter.
type Target struct {
	Module string // full module path, e.g. "model.layers.3.self_attn.q_proj"
	In     int    // input features of the layer (columns of W)
	Out    int    // output features of the layer (rows of W)
}

// Targets lists the adapted layers of a LLaMA model with the given shape,
// layer by layer, each layer's projections in the order of AllowedModules.
func Targets(o Options, layers, hidden, heads, kvHeads, headDim, intermediate int) ([]Target, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		name string
		v    int
	}{{"layers", layers}, {"hidden", hidden}, {"heads", heads}, {"kv_heads", kvHeads}, {"head_dim", headDim}, {"intermediate", intermediate}} {
		if d.v < 1 {
			return nil, fmt.Errorf("lora: targets: model %s must be at least 1, got %d", d.name, d.v)
		}
	}
	want := map[string]bool{}
	for _, m := range o.TargetModules {
		want[m] = true
	}
	q, kv := heads*headDim, kvHeads*headDim
	shape := map[string][2]int{ // in, out
		"q_proj":    {hidden, q},
		"k_proj":    {hidden, kv},
		"v_proj":    {hidden, kv},
		"o_proj":    {q, hidden},
		"gate_proj": {hidden, intermediate},
		"up_proj":   {hidden, intermediate},
		"down_proj": {intermediate, hidden},
	}
	var out []Target
	for l := 0; l < layers; l++ {
		for _, m := range modules {
			if !want[m] {
				continue
			}
			group := "self_attn"
			if m == "gate_proj" || m == "up_proj" || m == "down_proj" {
				group = "mlp"
			}
			s := shape[m]
			out = append(out, Target{Module: fmt.Sprintf("model.layers.%d.%s.%s", l, group, m), In: s[0], Out: s[1]})
		}
	}
	return out, nil
}

// NameA returns the PEFT tensor name of a module's A matrix.
func NameA(module string) string { return "base_model.model." + module + ".lora_A.weight" }

// NameB returns the PEFT tensor name of a module's B matrix.
func NameB(module string) string { return "base_model.model." + module + ".lora_B.weight" }

// Module returns the module path and "A" or "B" of a PEFT tensor name, or
// ok false when name is not a LoRA tensor name.
func Module(name string) (module, which string, ok bool) {
	rest, found := strings.CutPrefix(name, "base_model.model.")
	if !found {
		return "", "", false
	}
	for _, w := range []string{"A", "B"} {
		if m, found := strings.CutSuffix(rest, ".lora_"+w+".weight"); found && m != "" {
			return m, w, true
		}
	}
	return "", "", false
}

// Init creates the adapter tensors for targets, as PEFT initialises them:
// A [r, in] from torch's kaiming_uniform_(a=sqrt(5)), which is uniform on
// [-1/sqrt(in), 1/sqrt(in)], and B [out, r] all zeros, so the adapted model
// starts equal to the base model. Each A is drawn from its own PCG stream
// seeded by (seed, hash of the module path), so a module's values do not
// depend on which other modules are targeted. Grad is allocated (zeros).
// The result alternates A, B per target in the order of targets.
func Init(o Options, targets []Target, seed int64) []*engine.Param {
	params := make([]*engine.Param, 0, 2*len(targets))
	for _, t := range targets {
		h := fnv.New64a()
		h.Write([]byte(t.Module))
		rng := rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
		bound := 1 / math.Sqrt(float64(t.In))
		a := make([]float32, o.R*t.In)
		for i := range a {
			a[i] = float32((2*rng.Float64() - 1) * bound)
		}
		params = append(params,
			&engine.Param{Name: NameA(t.Module), Shape: []int{o.R, t.In}, Value: a, Grad: make([]float32, len(a))},
			&engine.Param{Name: NameB(t.Module), Shape: []int{t.Out, o.R}, Value: make([]float32, t.Out*o.R), Grad: make([]float32, t.Out*o.R)},
		)
	}
	return params
}
