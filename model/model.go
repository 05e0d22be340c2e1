package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/rella-project/rella/safetensors"
	"github.com/rella-project/rella/torchbin"
)

// Model is an opened HF LLaMA checkpoint. Its tensors stay memory-mapped
// until Close; Tensor converts one to float32 on demand.
type Model struct {
	Dir    string
	Config Config
	// Format is the weights' file format: "safetensors" or "pytorch" (.bin).
	Format string

	files  []source
	where  map[string]source // tensor name -> file holding it
	shapes map[string][]int  // expected tensor shapes
}

// source is one open weights file of either format.
type source interface {
	Path() string
	Names() []string
	// Meta returns the named tensor's dtype and shape.
	Meta(name string) (safetensors.DType, []int, bool)
	// Bytes returns the tensor's little-endian bytes in row-major order.
	Bytes(name string) ([]byte, error)
	Float32s(name string) ([]float32, error)
	Close() error
}

type safetensorsSource struct{ *safetensors.File }

func (s safetensorsSource) Meta(name string) (safetensors.DType, []int, bool) {
	i, ok := s.Info(name)
	return i.DType, i.Shape, ok
}

func openSafetensors(p string) (source, error) {
	f, err := safetensors.Open(p)
	if err != nil {
		return nil, err
	}
	return safetensorsSource{f}, nil
}

type torchbinSource struct{ *torchbin.File }

func (s torchbinSource) Meta(name string) (safetensors.DType, []int, bool) {
	i, ok := s.Info(name)
	return i.DType, i.Shape, ok
}

func openTorchbin(p string) (source, error) {
	f, err := torchbin.Open(p)
	if err != nil {
		return nil, err
	}
	return torchbinSource{f}, nil
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

// Load opens the checkpoint in dir: config.json and the weights, in the
// first of these layouts the folder holds:
//   - model.safetensors.index.json and its shards, or model.safetensors;
//   - pytorch_model.bin.index.json and its shards, or pytorch_model.bin
//     (PyTorch's format, as the lmsys Vicuna releases ship), read in place
//     by package torchbin.
//
// Every expected tensor is checked for presence, float dtype (F32, F16,
// BF16) and shape up front. dir must be a local folder (see CheckDir).
func Load(dir string) (*Model, error) {
	return LoadLogged(dir, nil)
}

// LoadLogged is Load, saying at debug level on log (when non-nil) which
// layout it read and which it passed over.
func LoadLogged(dir string, log *slog.Logger) (*Model, error) {
	if err := CheckDir(dir); err != nil {
		return nil, err
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	m := &Model{Dir: dir, Config: cfg, where: map[string]source{}, shapes: TensorShapes(cfg)}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	layout, err := findLayout(dir)
	if err != nil {
		return nil, err
	}
	if log != nil {
		args := []any{"dir", dir, "read", layout.name}
		if len(layout.passed) > 0 {
			args = append(args, "passed_over", layout.passed)
		}
		log.Debug("model: weights layout", args...)
	}
	m.Format = layout.format
	if layout.index != "" {
		err = m.openIndexed(dir, layout)
	} else {
		var f source
		f, err = layout.open(filepath.Join(dir, layout.name))
		if err != nil {
			err = fmt.Errorf("model: %w", err)
		} else {
			m.files = append(m.files, f)
			for _, n := range f.Names() {
				m.where[n] = f
			}
		}
	}
	if err != nil {
		return nil, err
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
		dtype, shape, _ := f.Meta(n)
		switch dtype {
		case safetensors.DTypeF32, safetensors.DTypeF16, safetensors.DTypeBF16:
		default:
			return nil, fmt.Errorf("model: %s: tensor %q has dtype %s, want F32, F16 or BF16", f.Path(), n, dtype)
		}
		if !slices.Equal(shape, want) {
			return nil, fmt.Errorf("model: %s: tensor %q has shape %v, want %v", f.Path(), n, shape, want)
		}
	}
	ok = true
	return m, nil
}

// openIndexed opens the shards an index file names and maps each tensor to
// the shard holding it.
func (m *Model) openIndexed(dir string, layout layout) error {
	index := filepath.Join(dir, layout.index)
	b, err := os.ReadFile(index)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("model: %s: %w", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return fmt.Errorf("model: %s: weight_map is empty", index)
	}
	held := map[string][]string{} // shard -> tensors the index puts in it
	for tensor, f := range idx.WeightMap {
		held[f] = append(held[f], tensor)
	}
	shards := make([]string, 0, len(held))
	for f := range held {
		shards = append(shards, f)
		sort.Strings(held[f])
	}
	sort.Strings(shards)
	byFile := map[string]source{}
	for _, name := range shards {
		if filepath.Base(name) != name || name == "." || name == ".." {
			return fmt.Errorf("model: %s: shard %q is not a plain file name", index, name)
		}
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("model: %s names shard %s, which is missing (it should hold %s); download the whole folder again", index, p, tensorList(held[name]))
		}
		f, err := layout.open(p)
		if err != nil {
			return fmt.Errorf("model: shard of %s holding %s: %w", index, tensorList(held[name]), err)
		}
		m.files = append(m.files, f)
		byFile[name] = f
	}
	for tensor, name := range idx.WeightMap {
		f := byFile[name]
		if _, _, in := f.Meta(tensor); !in {
			return fmt.Errorf("model: %s maps tensor %q to %s, which does not hold it", index, tensor, f.Path())
		}
		m.where[tensor] = f
	}
	return nil
}

// tensorList names a shard's tensors in an error, eliding a long list.
func tensorList(names []string) string {
	const show = 3
	if len(names) <= show {
		return fmt.Sprintf("tensors %s", strings.Join(names, ", "))
	}
	return fmt.Sprintf("tensors %s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}

// layout is one way a folder can hold its weights.
type layout struct {
	format string // "safetensors" or "pytorch"
	name   string // the file Load reads first (index or single file)
	index  string // the index file, or "" for a single file
	open   func(path string) (source, error)
	passed []string // layouts also present but not read
}

// Weight layouts in order of preference.
var layouts = []layout{
	{format: "safetensors", name: "model.safetensors.index.json", index: "model.safetensors.index.json", open: openSafetensors},
	{format: "safetensors", name: "model.safetensors", open: openSafetensors},
	{format: "pytorch", name: "pytorch_model.bin.index.json", index: "pytorch_model.bin.index.json", open: openTorchbin},
	{format: "pytorch", name: "pytorch_model.bin", open: openTorchbin},
}

// findLayout picks the first layout dir holds, noting the others present.
func findLayout(dir string) (layout, error) {
	var found []layout
	for _, l := range layouts {
		if fileExists(filepath.Join(dir, l.name)) {
			found = append(found, l)
		}
	}
	if len(found) == 0 {
		return layout{}, fmt.Errorf("model: %s holds no weights: none of model.safetensors.index.json, model.safetensors, pytorch_model.bin.index.json, pytorch_model.bin", dir)
	}
	l := found[0]
	for _, o := range found[1:] {
		l.passed = append(l.passed, o.name)
	}
	return l, nil
}

// WeightFiles returns the files Load reads in dir besides config.json: the
// index (if any) and every weight file of the layout it would choose.
func WeightFiles(dir string) ([]string, error) {
	l, err := findLayout(dir)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, l.name)
	if l.index == "" {
		return []string{p}, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("model: %s: %w", p, err)
	}
	out := []string{p}
	seen := map[string]bool{}
	for _, f := range idx.WeightMap {
		if !seen[f] {
			seen[f] = true
			out = append(out, filepath.Join(dir, f))
		}
	}
	sort.Strings(out[1:])
	return out, nil
}

// CheckDir returns nil when dir is an existing local folder, and otherwise
// a one-line error saying that the model path must be a local folder and
// how to get one (a hub id such as lmsys/vicuna-13b-v1.3 is not fetched).
func CheckDir(dir string) error {
	st, err := os.Stat(dir)
	if err == nil && st.IsDir() {
		return nil
	}
	get := "huggingface-cli download ORG/NAME --local-dir models/NAME"
	if hubID.MatchString(dir) {
		get = fmt.Sprintf("huggingface-cli download %s --local-dir models/%s", dir, path.Base(dir))
	}
	switch {
	case err == nil:
		return fmt.Errorf("%q is a file, not a folder: a model is a local folder holding config.json, the tokenizer and the weights (get one with: %s)", dir, get)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%q is not a local folder: a model must be a folder on disk, rella never downloads one (get it with: %s, then use that folder as the model path)", dir, get)
	}
	return fmt.Errorf("model folder %q: %w", dir, err)
}

// hubID matches a Hugging Face hub id: ORG/NAME with no other slashes.
var hubID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$`)

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

// Names returns every tensor the checkpoint's files hold, sorted (the
// expected ones and any others, such as rotary_emb.inv_freq buffers).
func (m *Model) Names() []string {
	names := make([]string, 0, len(m.where))
	for n := range m.where {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Raw returns the named tensor as stored: its dtype, shape and
// little-endian bytes in row-major order. The bytes may alias the file's
// read-only mapping: do not write to them or use them after Close.
func (m *Model) Raw(name string) (safetensors.DType, []int, []byte, error) {
	f, ok := m.where[name]
	if !ok {
		return "", nil, nil, fmt.Errorf("model: %s: no tensor %q", m.Dir, name)
	}
	dtype, shape, _ := f.Meta(name)
	b, err := f.Bytes(name)
	if err != nil {
		return "", nil, nil, fmt.Errorf("model: %w", err)
	}
	return dtype, slices.Clone(shape), b, nil
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
