package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/safetensors"
)

func initTiny(t *testing.T, dtype string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "m")
	if err := Init(dir, InitOptions{Hidden: 8, Layers: 2, Heads: 2, KVHeads: 1, Intermediate: 12, Vocab: 10, Seed: 3, DType: dtype}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readAll returns every tensor of the single-file checkpoint in dir.
func readAll(t *testing.T, dir string) map[string]safetensors.Tensor {
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]safetensors.Tensor{}
	for _, n := range f.Names() {
		v, err := f.Float32s(n)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := f.Info(n)
		out[n] = safetensors.F32(n, info.Shape, v)
	}
	return out
}

func TestInitAndLoad(t *testing.T) {
	dir := initTiny(t, "f32")
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config
	if c.HiddenSize != 8 || c.NumHiddenLayers != 2 || c.NumKeyValueHeads != 1 || c.HeadDim != 4 || c.VocabSize != 10 || c.TieWordEmbeddings {
		t.Errorf("config %+v", c)
	}
	q, err := m.Tensor("model.layers.1.self_attn.q_proj.weight")
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 8*8 {
		t.Errorf("q_proj has %d values", len(q))
	}
	var ss float64
	for _, v := range q {
		ss += float64(v) * float64(v)
	}
	if sd := ss / float64(len(q)); sd < 0.0001 || sd > 0.0009 { // variance 0.02² = 4e-4
		t.Errorf("q_proj variance %g, want about 4e-4", sd)
	}
	n, _ := m.Tensor("model.norm.weight")
	for _, v := range n {
		if v != 1 {
			t.Fatalf("norm weight %v, want ones", n)
		}
	}
	if err := Init(dir, InitOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Init over an existing model: %v", err)
	}
}

func TestInitCopiesTokenizer(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	dir := filepath.Join(t.TempDir(), "m")
	if err := Init(dir, InitOptions{Hidden: 8, Layers: 1, Heads: 2, Intermediate: 8, Vocab: 32000, Tokenizer: tok}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.model", "tokenizer.json", "config.json", "model.safetensors"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestHalfPrecisionCheckpoints(t *testing.T) {
	ref := readAll(t, initTiny(t, "f32")) // same seed: same weights before rounding
	for _, dt := range []string{"bf16", "f16"} {
		dir := initTiny(t, dt)
		m, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if m.Config.TorchDType == "float32" {
			t.Errorf("%s: torch_dtype %q", dt, m.Config.TorchDType)
		}
		v, err := m.Tensor("model.layers.0.mlp.down_proj.weight")
		if err != nil {
			t.Fatal(err)
		}
		want := ref["model.layers.0.mlp.down_proj.weight"]
		f, _ := safetensors.Open(filepath.Join(dir, "model.safetensors"))
		info, _ := f.Info("model.layers.0.mlp.down_proj.weight")
		f.Close()
		if string(info.DType) != strings.ToUpper(dt) {
			t.Errorf("%s: stored as %s", dt, info.DType)
		}
		wv := make([]float32, len(v))
		for i := range wv {
			wv[i] = float32frombits(want.Data[4*i:])
		}
		tol := map[string]float64{"bf16": 1.0 / 256, "f16": 1.0 / 2048}[dt]
		for i := range v {
			if d := float64(v[i] - wv[i]); d > tol*abs(float64(wv[i]))+1e-7 || -d > tol*abs(float64(wv[i]))+1e-7 {
				t.Fatalf("%s: value %d is %g, f32 %g", dt, i, v[i], wv[i])
			}
		}
		m.Close()
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func float32frombits(b []byte) float32 {
	u := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	return math.Float32frombits(u)
}

func TestShardedLoad(t *testing.T) {
	src := initTiny(t, "f32")
	all := readAll(t, src)
	dir := t.TempDir()
	cfg, _ := os.ReadFile(filepath.Join(src, "config.json"))
	os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
	var shard [2][]safetensors.Tensor
	weightMap := map[string]string{}
	i := 0
	for n, tn := range all {
		k := i % 2
		shard[k] = append(shard[k], tn)
		weightMap[n] = []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[k]
		i++
	}
	for k, name := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		if err := safetensors.Write(filepath.Join(dir, name), shard[k], nil); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": weightMap})
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for n, tn := range all {
		v, err := m.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		for j := range v {
			if v[j] != float32frombits(tn.Data[4*j:]) {
				t.Fatalf("%s[%d] = %g after sharding", n, j, v[j])
			}
		}
	}
}

// rewrite writes dir's checkpoint again after edit changes the tensor list.
func rewrite(t *testing.T, dir string, edit func(map[string]safetensors.Tensor)) {
	all := readAll(t, dir)
	edit(all)
	var ts []safetensors.Tensor
	for _, v := range all {
		ts = append(ts, v)
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Run("missing tensor", func(t *testing.T) {
		dir := initTiny(t, "f32")
		rewrite(t, dir, func(m map[string]safetensors.Tensor) { delete(m, "model.layers.1.mlp.up_proj.weight") })
		_, err := Load(dir)
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), "model.layers.1.mlp.up_proj.weight") || !strings.Contains(err.Error(), "missing") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("wrong shape", func(t *testing.T) {
		dir := initTiny(t, "f32")
		rewrite(t, dir, func(m map[string]safetensors.Tensor) {
			m["model.layers.0.self_attn.k_proj.weight"] = safetensors.F32("model.layers.0.self_attn.k_proj.weight", []int{8, 4}, make([]float32, 32))
		})
		_, err := Load(dir)
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), "k_proj") || !strings.Contains(err.Error(), "[8 4]") ||
			!strings.Contains(err.Error(), "[4 8]") || !strings.Contains(err.Error(), "model.safetensors") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("truncated file", func(t *testing.T) {
		dir := initTiny(t, "f32")
		p := filepath.Join(dir, "model.safetensors")
		st, _ := os.Stat(p)
		if err := os.Truncate(p, st.Size()-10); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir)
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), "model.safetensors") {
			t.Errorf("error %v", err)
		}
	})
	for _, tc := range []struct{ key, value string }{
		{"rope_scaling", `{"type": "linear", "factor": 2.0}`},
		{"attention_bias", "true"},
		{"mlp_bias", "true"},
		{"hidden_act", `"gelu"`},
		{"model_type", `"mistral"`},
	} {
		t.Run("config "+tc.key, func(t *testing.T) {
			dir := initTiny(t, "f32")
			p := filepath.Join(dir, "config.json")
			var raw map[string]json.RawMessage
			b, _ := os.ReadFile(p)
			json.Unmarshal(b, &raw)
			raw[tc.key] = json.RawMessage(tc.value)
			b, _ = json.Marshal(raw)
			os.WriteFile(p, b, 0o644)
			_, err := Load(dir)
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), "config.json") || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error %v", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig("config.json", []byte(`{"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
		"num_attention_heads": 32, "vocab_size": 32000, "rms_norm_eps": 1e-5}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 128 || c.NumKeyValueHeads != 32 || c.RopeTheta != 10000 || c.TieWordEmbeddings {
		t.Errorf("defaults: %+v", c)
	}
}
