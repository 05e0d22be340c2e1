package model

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/rella-project/rella/safetensors"
)

// InitOptions describes a random LLaMA made by Init. Zero fields take the
// defaults of DefaultInitOptions.
type InitOptions struct {
	Hidden, Layers, Heads, KVHeads, Intermediate, Vocab int
	Seed                                                int64
	Std                                                 float64 // standard deviation of the weights (default 0.02, HF's initializer_range)
	DType                                               string  // f32 (default), bf16 or f16
	Tokenizer                                           string  // folder to copy tokenizer files from (optional)
}

// DefaultInitOptions is a model small enough for CPU tests and the
// quickstart, with the LLaMA tokenizer's vocabulary size.
func DefaultInitOptions() InitOptions {
	return InitOptions{Hidden: 64, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 172, Vocab: 32000, Seed: 1, DType: "f32"}
}

// tokenizerFiles are the files Init copies from InitOptions.Tokenizer when present.
var tokenizerFiles = []string{"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}

// Init writes a random LLaMA (config.json, model.safetensors and any
// tokenizer files) into dir, which must not exist or be empty. Weights are
// N(0, 0.02) as HF initialises them, norms are 1, embeddings are untied.
// The folder appears complete or not at all.
func Init(dir string, o InitOptions) error {
	d := DefaultInitOptions()
	if o.Hidden == 0 {
		o.Hidden = d.Hidden
	}
	if o.Layers == 0 {
		o.Layers = d.Layers
	}
	if o.Heads == 0 {
		o.Heads = d.Heads
	}
	if o.KVHeads == 0 {
		o.KVHeads = o.Heads
		if o.Heads == d.Heads {
			o.KVHeads = d.KVHeads
		}
	}
	if o.Intermediate == 0 {
		o.Intermediate = d.Intermediate
	}
	if o.Vocab == 0 {
		o.Vocab = d.Vocab
	}
	if o.DType == "" {
		o.DType = d.DType
	}
	if o.Std == 0 {
		o.Std = 0.02
	}
	torchDType := map[string]string{"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[o.DType]
	if torchDType == "" {
		return fmt.Errorf("model: init: dtype %q, want f32, bf16 or f16", o.DType)
	}
	if o.Heads <= 0 || o.Hidden%o.Heads != 0 {
		return fmt.Errorf("model: init: hidden %d is not a multiple of heads %d", o.Hidden, o.Heads)
	}
	cfg := Config{
		HiddenSize: o.Hidden, IntermediateSize: o.Intermediate, NumHiddenLayers: o.Layers,
		NumAttentionHeads: o.Heads, NumKeyValueHeads: o.KVHeads, HeadDim: o.Hidden / o.Heads,
		VocabSize: o.Vocab, MaxPositionEmbeddings: 4096, RMSNormEps: 1e-5, RopeTheta: 10000,
		BOSTokenID: 1, EOSTokenID: 2, TorchDType: torchDType,
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("model: init: %s exists and is not empty", dir)
	}

	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes 0700
		return fmt.Errorf("model: init: %w", err)
	}

	cj := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama", "hidden_act": "silu",
		"hidden_size": cfg.HiddenSize, "intermediate_size": cfg.IntermediateSize,
		"num_hidden_layers": cfg.NumHiddenLayers, "num_attention_heads": cfg.NumAttentionHeads,
		"num_key_value_heads": cfg.NumKeyValueHeads, "head_dim": cfg.HeadDim, "vocab_size": cfg.VocabSize,
		"max_position_embeddings": cfg.MaxPositionEmbeddings, "rms_norm_eps": cfg.RMSNormEps,
		"rope_theta": cfg.RopeTheta, "rope_scaling": nil, "attention_bias": false, "mlp_bias": false,
		"tie_word_embeddings": false, "torch_dtype": torchDType, "bos_token_id": 1, "eos_token_id": 2,
		"pad_token_id": 0, "initializer_range": o.Std,
	}
	b, err := json.MarshalIndent(cj, "", "  ")
	if err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("model: init: %w", err)
	}

	shapes := TensorShapes(cfg)
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0x5eed1e55))
	tensors := make([]safetensors.Tensor, 0, len(names))
	for _, n := range names {
		shape := shapes[n]
		size := 1
		for _, s := range shape {
			size *= s
		}
		v := make([]float32, size)
		if len(shape) == 1 { // RMSNorm weights
			for i := range v {
				v[i] = 1
			}
		} else {
			for i := range v {
				v[i] = float32(rng.NormFloat64() * o.Std)
			}
		}
		switch o.DType {
		case "bf16":
			tensors = append(tensors, safetensors.BF16(n, shape, v))
		case "f16":
			tensors = append(tensors, safetensors.F16(n, shape, v))
		default:
			tensors = append(tensors, safetensors.F32(n, shape, v))
		}
	}
	if err := safetensors.Write(filepath.Join(tmp, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	if err := os.Chmod(filepath.Join(tmp, "model.safetensors"), 0o644); err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	if o.Tokenizer != "" {
		copied := 0
		for _, f := range tokenizerFiles {
			src := filepath.Join(o.Tokenizer, f)
			if !fileExists(src) {
				continue
			}
			if err := copyFile(src, filepath.Join(tmp, f)); err != nil {
				return fmt.Errorf("model: init: %w", err)
			}
			copied++
		}
		if copied == 0 {
			return fmt.Errorf("model: init: %s holds none of %v", o.Tokenizer, tokenizerFiles)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	_ = os.Remove(dir) // an empty folder may stand in the way
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("model: init: %w", err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
