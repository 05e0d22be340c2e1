package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/rella-project/rella/safetensors"
)

// Model is an opened HF LLaMA checkpoint. Its tensors stay memory-mapped
// until Close; Tensor converts one to float32 on demand.
type Model struct {
	Dir    string
	Config Config

	files  []*safetensors.File
	where  map[string]*safetensors.File // tensor name -> file holding it
	shapes map[string][]int             // expected tensor shapes
}

// TensorShapes returns every tensor a checkpoint with config c must hold,
// with its shape ([out, in] for projections, as HF stores them).
func TensorShapes(c Config) map[string][]int {
	d, q, kv, ff := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize
	s := map[string][]int{
		"model.embed_tokens.weight": {c.VocabSize, d},
		"model.norm.weight":         {d},
	}
	if !c.TieWordEmbeddings {
		s["lm_head.weight"] = []int{c.VocabSize, d}
	}
	for i := 0; i < c.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		s[p+"input_layernorm.weight"] = []int{d}
		s[p+"post_attention_layernorm.weight"] = []int{d}
		s[p+"self_attn.q_proj.weight"] = []int{q, d}
		s[p+"self_attn.k_proj.weight"] = []int{kv, d}
		s[p+"self_attn.v_proj.weight"] = []int{kv, d}
		s[p+"self_attn.o_proj.weight"] = []int{d, q}
		s[p+"mlp.gate_proj.weight"] = []int{ff, d}
		s[p+"mlp.up_proj.weight"] = []int{ff, d}
		s[p+"mlp.down_proj.weight"] = []int{d, ff}
	}
	return s
}

// Load opens the checkpoint in dir: config.json and either model.safetensors
// or the shards listed in model.safetensors.index.json. Every expected tensor
// is checked for presence, float dtype (F32, F16, BF16) and shape up front.
func Load(dir string) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	m := &Model{Dir: dir, Config: cfg, where: map[string]*safetensors.File{}, shapes: TensorShapes(cfg)}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	index := filepath.Join(dir, "model.safetensors.index.json")
	single := filepath.Join(dir, "model.safetensors")
	switch {
	case fileExists(index):
		b, err := os.ReadFile(index)
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("model: %s: %w", index, err)
		}
		byFile := map[string]*safetensors.File{}
		shards := make([]string, 0)
		for _, f := range idx.WeightMap {
			if _, seen := byFile[f]; !seen {
				byFile[f] = nil
				shards = append(shards, f)
			}
		}
		sort.Strings(shards)
		for _, name := range shards {
			if filepath.Base(name) != name {
				return nil, fmt.Errorf("model: %s: shard %q is not a plain file name", index, name)
			}
			f, err := safetensors.Open(filepath.Join(dir, name))
			if err != nil {
				return nil, fmt.Errorf("model: shard of %s: %w", index, err)
			}
			m.files = append(m.files, f)
			byFile[name] = f
		}
		for tensor, name := range idx.WeightMap {
			f := byFile[name]
			if _, in := f.Info(tensor); !in {
				return nil, fmt.Errorf("model: %s maps tensor %q to %s, which does not hold it", index, tensor, f.Path())
			}
			m.where[tensor] = f
		}
	case fileExists(single):
		f, err := safetensors.Open(single)
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		m.files = append(m.files, f)
		for _, n := range f.Names() {
			m.where[n] = f
		}
	default:
		return nil, fmt.Errorf("model: %s holds neither model.safetensors nor model.safetensors.index.json", dir)
	}
	names := make([]string, 0, len(m.shapes))
	for n := range m.shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want := m.shapes[n]
		f, in := m.where[n]
		if !in {
			files := make([]string, len(m.files))
			for i, f := range m.files {
				files[i] = f.Path()
			}
			return nil, fmt.Errorf("model: tensor %q is missing (looked in %v)", n, files)
		}
		info, _ := f.Info(n)
		switch info.DType {
		case safetensors.DTypeF32, safetensors.DTypeF16, safetensors.DTypeBF16:
		default:
			return nil, fmt.Errorf("model: %s: tensor %q has dtype %s, want F32, F16 or BF16", f.Path(), n, info.DType)
		}
		if !slices.Equal(info.Shape, want) {
			return nil, fmt.Errorf("model: %s: tensor %q has shape %v, want %v", f.Path(), n, info.Shape, want)
		}
	}
	ok = true
	return m, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Tensor returns the named tensor (HF name) converted to float32 in a new
// slice. For a tied checkpoint, "lm_head.weight" returns the embeddings.
func (m *Model) Tensor(name string) ([]float32, error) {
	if name == "lm_head.weight" && m.Config.TieWordEmbeddings {
		name = "model.embed_tokens.weight"
	}
	f, ok := m.where[name]
	if !ok {
		return nil, fmt.Errorf("model: %s: no tensor %q", m.Dir, name)
	}
	v, err := f.Float32s(name)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	return v, nil
}

// Shape returns the expected shape of the named tensor, or nil.
func (m *Model) Shape(name string) []int {
	if name == "lm_head.weight" && m.Config.TieWordEmbeddings {
		name = "model.embed_tokens.weight"
	}
	return slices.Clone(m.shapes[name])
}

// Close unmaps the checkpoint's files.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	m.files = nil
	m.where = nil
	return errors.Join(errs...)
}
