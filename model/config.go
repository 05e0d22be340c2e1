// Package model reads and writes LLaMA checkpoints in the Hugging Face layout
// (config.json plus one or more safetensors files) and makes small random
// LLaMA models for tests and the quickstart.
package model

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Config is the part of a Hugging Face LlamaConfig (config.json) that the
// decoder needs.
type Config struct {
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	NumKeyValueHeads      int     `json:"num_key_value_heads"`
	HeadDim               int     `json:"head_dim"`
	VocabSize             int     `json:"vocab_size"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	RopeTheta             float64 `json:"rope_theta"`
	TieWordEmbeddings     bool    `json:"tie_word_embeddings"`
	BOSTokenID            int     `json:"bos_token_id"`
	EOSTokenID            int     `json:"eos_token_id"`
	TorchDType            string  `json:"torch_dtype"`
}

// QDim is the width of the query projection (heads x head_dim).
func (c Config) QDim() int { return c.NumAttentionHeads * c.HeadDim }

// KVDim is the width of the key and value projections (kv heads x head_dim).
func (c Config) KVDim() int { return c.NumKeyValueHeads * c.HeadDim }

// LoadConfig reads dir/config.json, fills HF's defaults and rejects
// features the decoder does not implement.
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("model: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig parses the bytes of a config.json; path only names it in errors.
func ParseConfig(path string, b []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, fmt.Errorf("model: %s: %w", path, err)
	}
	str := func(key string) (string, bool, error) {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", true, fmt.Errorf("model: %s: key %q: %w", path, key, err)
		}
		return s, true, nil
	}
	if s, ok, err := str("model_type"); err != nil {
		return Config{}, err
	} else if ok && s != "llama" {
		return Config{}, fmt.Errorf("model: %s: key \"model_type\" is %q, only \"llama\" is supported", path, s)
	}
	if s, ok, err := str("hidden_act"); err != nil {
		return Config{}, err
	} else if ok && s != "silu" {
		return Config{}, fmt.Errorf("model: %s: key \"hidden_act\" is %q, only \"silu\" is supported", path, s)
	}
	if v, ok := raw["rope_scaling"]; ok && string(v) != "null" {
		return Config{}, fmt.Errorf("model: %s: key \"rope_scaling\" is %s, only null is supported", path, v)
	}
	for _, key := range []string{"attention_bias", "mlp_bias"} {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			continue
		}
		var on bool
		if err := json.Unmarshal(v, &on); err != nil {
			return Config{}, fmt.Errorf("model: %s: key %q: %w", path, key, err)
		}
		if on {
			return Config{}, fmt.Errorf("model: %s: key %q is true, biases are not supported", path, key)
		}
	}
	c := Config{RMSNormEps: 1e-6, RopeTheta: 10000, MaxPositionEmbeddings: 2048, BOSTokenID: 1, EOSTokenID: 2}
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("model: %s: %w", path, err)
	}
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.HeadDim == 0 && c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("model: %s: %w", path, err)
	}
	return c, nil
}

// Validate checks that the sizes are positive and consistent.
func (c Config) Validate() error {
	for _, f := range []struct {
		key string
		v   int
	}{
		{"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads}, {"head_dim", c.HeadDim}, {"vocab_size", c.VocabSize},
	} {
		if f.v <= 0 {
			return fmt.Errorf("key %q is %d, want > 0", f.key, f.v)
		}
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return fmt.Errorf("key \"num_attention_heads\" (%d) is not a multiple of \"num_key_value_heads\" (%d)", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("key \"head_dim\" is %d, want an even number for rotary embeddings", c.HeadDim)
	}
	if c.RMSNormEps <= 0 {
		return fmt.Errorf("key \"rms_norm_eps\" is %g, want > 0", c.RMSNormEps)
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("key \"rope_theta\" is %g, want > 0", c.RopeTheta)
	}
	return nil
}
