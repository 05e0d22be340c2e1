package cuda

import (
	"fmt"
	"strings"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// ContextOverhead is the device memory a run needs beyond what the engine
// allocates (CUDA context, cuBLAS handle and workspace, allocator slack);
// the engine checks against free memory measured after the context exists,
// so the plan adds this to compare with a device's capacity.
const ContextOverhead = 1 << 30

// MemoryPlan is the device memory a run plans to use, in bytes.
type MemoryPlan struct {
	Weights   int64 // QuantizedWeightBytes (with the dequantise buffer for int8)
	Workspace int64 // one forward pass (WorkspaceBytes)
	Training  int64 // one LossGrad pass (trainWorkspace), 0 for scoring
	Overhead  int64 // ContextOverhead
}

// Total is everything the plan needs.
func (p MemoryPlan) Total() int64 { return p.Weights + p.Workspace + p.Training + p.Overhead }

// Fits reports whether the plan fits a device of capacity bytes.
func (p MemoryPlan) Fits(capacity int64) bool { return p.Total() <= capacity }

// String is the plan in GiB, as rella prints it.
func (p MemoryPlan) String() string {
	s := fmt.Sprintf("weights %.2f GiB + workspace %.2f GiB", gib(p.Weights), gib(p.Workspace))
	if p.Training > 0 {
		s += fmt.Sprintf(" + training %.2f GiB", gib(p.Training))
	}
	return s + fmt.Sprintf(" + context %.2f GiB = %.2f GiB", gib(p.Overhead), gib(p.Total()))
}

// PlanMemory is the plan of an engine on cfg in e (quantize "" or "int8")
// with forward passes of maxTokens tokens and, when params is non-nil, a
// Trainer whose LossGrad passes hold at most trainTokens tokens, labelled
// of them labelled (vocabulary chunk DefaultVocabChunk).
func PlanMemory(cfg model.Config, e Elem, quantize string, maxTokens int, params []*engine.Param, trainTokens, labelled int) (MemoryPlan, error) {
	p := MemoryPlan{Weights: QuantizedWeightBytes(cfg, e, quantize), Workspace: WorkspaceBytes(cfg, maxTokens, 256, e), Overhead: ContextOverhead}
	if params != nil {
		specs, err := parseLoRA(cfg, params)
		if err != nil {
			return p, err
		}
		p.Training = trainWorkspace(cfg, trainTokens, min(labelled, trainTokens), min(DefaultVocabChunk, cfg.VocabSize), e, specs)
	}
	return p, nil
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// Vicuna7B and Vicuna13B are the configurations of the paper's models
// (LLaMA-7B/13B shapes, vocabulary 32000).
var (
	Vicuna7B = model.Config{HiddenSize: 4096, IntermediateSize: 11008, NumHiddenLayers: 32, NumAttentionHeads: 32,
		NumKeyValueHeads: 32, HeadDim: 128, VocabSize: 32000, RMSNormEps: 1e-5, RopeTheta: 10000}
	Vicuna13B = model.Config{HiddenSize: 5120, IntermediateSize: 13824, NumHiddenLayers: 40, NumAttentionHeads: 40,
		NumKeyValueHeads: 40, HeadDim: 128, VocabSize: 32000, RMSNormEps: 1e-5, RopeTheta: 10000}
)

// Device capacities of the memory table: what nvidia-smi reports as total
// (16 GB V100 16160 MiB, 32 GB V100 32510 MiB, H100 80 GB 81559 MiB,
// H200 143771 MiB).
var tableDevices = []struct {
	name  string
	bytes int64
}{{"V100 16 GB", 16160 << 20}, {"V100 32 GB", 32510 << 20}, {"H100 80 GB", 81559 << 20}, {"H200 141 GB", 143771 << 20}}

// loraParams are empty PEFT tensors of rank r on the modules of every layer.
func loraParams(cfg model.Config, r int, modules ...string) []*engine.Param {
	var ps []*engine.Param
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		for _, m := range modules {
			in, out, _ := moduleDims(cfg, m)
			pre := fmt.Sprintf("base_model.model.model.layers.%d.%s.%s.", l, moduleGroup[m], m)
			ps = append(ps,
				&engine.Param{Name: pre + "lora_A.weight", Shape: []int{r, in}, Value: make([]float32, r*in), Grad: make([]float32, r*in)},
				&engine.Param{Name: pre + "lora_B.weight", Shape: []int{out, r}, Value: make([]float32, out*r), Grad: make([]float32, out*r)})
		}
	}
	return ps
}

// MemoryTable renders docs/memory.md's table: LoRA training (r 8 on q_proj
// and v_proj, the paper's) of Vicuna-7B and 13B with fp16 or int8
// projections (fp16 storage, as on a V100), prompts of K = 15 and 30
// history items (512 and 896 tokens: the longest ML-1M prompts with their
// answer measured 497 and 834 with the LLaMA tokenizer), micro-batches 1,
// 2, 4 and 8 (one LossGrad pass of micro-batch × length tokens, 2 labelled
// per example), evaluation scoring in passes of 8 prompts, against four
// devices.
func MemoryTable() string {
	var b strings.Builder
	b.WriteString("| model | weights | K | micro-batch | weights GiB | total GiB |")
	for _, d := range tableDevices {
		b.WriteString(" " + d.name + " |")
	}
	b.WriteString("\n|---|---|---|---|---|---|")
	for range tableDevices {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, m := range []struct {
		name string
		cfg  model.Config
	}{{"7B", Vicuna7B}, {"13B", Vicuna13B}} {
		params := loraParams(m.cfg, 8, "q_proj", "v_proj")
		for _, q := range []string{"", model.QuantInt8} {
			wname := "fp16"
			if q != "" {
				wname = "int8"
			}
			for _, k := range []struct{ k, tokens int }{{15, 512}, {30, 896}} {
				for _, mb := range []int{1, 2, 4, 8} {
					p, err := PlanMemory(m.cfg, F16, q, 8*k.tokens, params, mb*k.tokens, 2*mb)
					if err != nil {
						panic(err) // the shapes above are valid
					}
					fmt.Fprintf(&b, "| %s | %s | %d | %d | %.1f | %.1f |", m.name, wname, k.k, mb, gib(p.Weights), gib(p.Total()))
					for _, d := range tableDevices {
						if p.Fits(d.bytes) {
							b.WriteString(" yes |")
						} else {
							b.WriteString(" no |")
						}
					}
					b.WriteString("\n")
				}
			}
		}
	}
	b.WriteString("\nScoring and embedding only (`rella score`, no adapter training): passes of up to DefaultMaxTokens (16384) tokens.\n\n")
	b.WriteString("| model | weights | weights GiB | total GiB |")
	for _, d := range tableDevices {
		b.WriteString(" " + d.name + " |")
	}
	b.WriteString("\n|---|---|---|---|")
	for range tableDevices {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, m := range []struct {
		name string
		cfg  model.Config
	}{{"7B", Vicuna7B}, {"13B", Vicuna13B}} {
		for _, q := range []string{"", model.QuantInt8} {
			wname := "fp16"
			if q != "" {
				wname = "int8"
			}
			p, _ := PlanMemory(m.cfg, F16, q, DefaultMaxTokens, nil, 0, 0)
			fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f |", m.name, wname, gib(p.Weights), gib(p.Total()))
			for _, d := range tableDevices {
				if p.Fits(d.bytes) {
					b.WriteString(" yes |")
				} else {
					b.WriteString(" no |")
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
