package cuda

import (
	"fmt"

	"github.com/rella-project/rella/model"
)

// Options tune the GPU engine. The zero value picks the defaults.
type Options struct {
	// Device is the CUDA device index.
	Device int
	// Precision is "bf16", "f16", "f32", or "" for the device's natural half
	// type (bf16 on sm_80 and newer, f16 before).
	Precision string
	// MaxTokens bounds the tokens of one forward pass (the sequences of a
	// call are packed into passes of at most this many tokens; a longer
	// sequence runs alone). 0 means DefaultMaxTokens.
	MaxTokens int
	// Quantize is model.quantize: "" (weights in the storage type) or
	// "int8" (the seven projections of every layer as int8 with a float32
	// scale per output row, dequantised into the storage type by the
	// dequant_int8 kernel before each GEMM, into one reused buffer).
	Quantize string
	// Reserve is device memory, beyond the weights and the forward
	// workspace, that must be free when the weights are loaded (the
	// Trainer's workspace), so that a run that cannot fit is refused before
	// anything is uploaded.
	Reserve int64
}

// DefaultMaxTokens is the default token budget of one forward pass.
const DefaultMaxTokens = 16384

// ParsePrecision maps a precision name to a storage type; "" gives ok=false.
func ParsePrecision(s string) (e Elem, ok bool, err error) {
	switch s {
	case "":
		return 0, false, nil
	case "f32", "fp32", "float32":
		return F32, true, nil
	case "bf16", "bfloat16":
		return BF16, true, nil
	case "f16", "fp16", "float16":
		return F16, true, nil
	}
	return 0, false, fmt.Errorf("cuda: unknown precision %q (want bf16, f16 or f32)", s)
}

// CheckConfig reports what in cfg the kernels cannot run.
func CheckConfig(cfg model.Config) error {
	switch {
	case cfg.HeadDim <= 0 || cfg.HeadDim > MaxHeadDim || cfg.HeadDim%2 != 0:
		return fmt.Errorf("cuda: head_dim %d unsupported (even, at most %d)", cfg.HeadDim, MaxHeadDim)
	case cfg.NumKeyValueHeads <= 0 || cfg.NumAttentionHeads%cfg.NumKeyValueHeads != 0:
		return fmt.Errorf("cuda: %d attention heads are not a multiple of %d kv heads", cfg.NumAttentionHeads, cfg.NumKeyValueHeads)
	case cfg.HiddenSize <= 0 || cfg.IntermediateSize <= 0 || cfg.VocabSize <= 0 || cfg.NumHiddenLayers <= 0:
		return fmt.Errorf("cuda: config has a zero dimension: %+v", cfg)
	}
	return nil
}

// WeightBytes is the device memory the weights of cfg take in type e.
func WeightBytes(cfg model.Config, e Elem) int64 {
	d, q, kv, ff := int64(cfg.HiddenSize), int64(cfg.QDim()), int64(cfg.KVDim()), int64(cfg.IntermediateSize)
	perLayer := 2*d + d*q + 2*d*kv + q*d + 3*d*ff
	n := int64(cfg.NumHiddenLayers)*perLayer + int64(cfg.VocabSize)*d + d
	if !cfg.TieWordEmbeddings {
		n += int64(cfg.VocabSize) * d
	}
	return n * int64(e.Size())
}

// WorkspaceBytes is the device memory of the activations of one forward
// pass over tokens tokens in B sequences, with full-vocabulary logits.
func WorkspaceBytes(cfg model.Config, tokens, B int, e Elem) int64 {
	n, es := int64(tokens), int64(e.Size())
	d, q, kv, ff := int64(cfg.HiddenSize), int64(cfg.QDim()), int64(cfg.KVDim()), int64(cfg.IntermediateSize)
	x := n * d * 4                                           // residual stream
	act := n * (d + q + 2*kv + q + d + 2*ff) * es            // h, q, k, v, attn, y, gate, up
	ints := n*8 + int64(B+1)*4                               // ids, positions, offsets
	head := int64(B) * (d*4 + d*es + int64(cfg.VocabSize)*4) // last rows, normed, logits
	return x + act + ints + head
}

// chunks splits sequences (given by their lengths) into consecutive groups
// of at most maxTokens tokens; a sequence longer than maxTokens forms a
// group of its own. Each group is [start, end) into lens.
func chunks(lens []int, maxTokens int) [][2]int {
	var out [][2]int
	start, tokens := 0, 0
	for i, l := range lens {
		if i > start && tokens+l > maxTokens {
			out = append(out, [2]int{start, i})
			start, tokens = i, 0
		}
		tokens += l
	}
	if start < len(lens) {
		out = append(out, [2]int{start, len(lens)})
	}
	return out
}

// SelfTestOptions choose what SelfTest checks and measures.
type SelfTestOptions struct {
	Device int
	// Seed draws the random inputs; 0 takes one from the clock (fresh inputs each run).
	Seed uint64
	// ModelDir, when set, is a small HF checkpoint (the stories260K fixture)
	// run through the engine and compared with ForwardRef; a reference.json
	// beside it (llama2.c's logits) is compared too.
	ModelDir string
	// BenchDir, when set, holds a checkpoint and seqs.json (written by
	// scripts/hf_bench.py) whose scoring the self-test times.
	BenchDir string
	// BenchReps is the number of timed repetitions (after one warm-up).
	BenchReps int
	// Precision as in Options.
	Precision string
}
