package lora

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/safetensors"
)

// ConfigFile and WeightsFile are the names of the two files of a PEFT adapter folder.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// peftConfig is adapter_config.json as PEFT's LoraConfig writes it (keys
// sorted). Only keys that LoraConfig has had since PEFT 0.4 are written:
// PEFT 0.4 to 0.12 reject unknown keys (newer ones and 0.3 ignore them), so
// keys added later (revision, rank_pattern, use_dora, ...) are left out and
// take their defaults.
type peftConfig struct {
	BaseModelNameOrPath string   `json:"base_model_name_or_path"`
	Bias                string   `json:"bias"`
	FanInFanOut         bool     `json:"fan_in_fan_out"`
	InferenceMode       bool     `json:"inference_mode"`
	InitLoraWeights     bool     `json:"init_lora_weights"`
	LayersPattern       *string  `json:"layers_pattern"`
	LayersToTransform   []int    `json:"layers_to_transform"`
	LoraAlpha           float64  `json:"lora_alpha"`
	LoraDropout         float64  `json:"lora_dropout"`
	ModulesToSave       []string `json:"modules_to_save"`
	PeftType            string   `json:"peft_type"`
	R                   int      `json:"r"`
	TargetModules       []string `json:"target_modules"`
	TaskType            string   `json:"task_type"`
}

// Save writes params as a PEFT adapter folder dir (created if needed):
// adapter_model.safetensors (F32, PEFT tensor names) and adapter_config.json.
// Each file is written atomically (temporary file, fsync, rename), the
// weights first, so a folder with a config always has complete weights.
// It refuses an empty adapter: no params, an empty tensor, an A without its
// B (or the reverse), shapes that disagree with o.R, or non-finite values.
func Save(dir string, o Options, baseModel string, params []*engine.Param) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("lora: save %s: %w", dir, err)
	}
	if len(params) == 0 {
		return fmt.Errorf("lora: save %s: no adapter tensors (refusing to write an empty adapter)", dir)
	}
	if err := checkParams(o.R, params); err != nil {
		return fmt.Errorf("lora: save %s: %w", dir, err)
	}
	tensors := make([]safetensors.Tensor, len(params))
	for i, p := range params {
		tensors[i] = safetensors.F32(p.Name, p.Shape, p.Value)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	if err := safetensors.Write(filepath.Join(dir, WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	cfg := peftConfig{
		BaseModelNameOrPath: baseModel,
		Bias:                "none",
		InferenceMode:       true,
		InitLoraWeights:     true,
		LoraAlpha:           o.Alpha,
		LoraDropout:         o.Dropout,
		PeftType:            "LORA",
		R:                   o.R,
		TargetModules:       append([]string(nil), o.TargetModules...),
		TaskType:            "CAUSAL_LM",
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("lora: save %s: %w", dir, err)
	}
	b = append(b, '\n')
	if err := safetensors.WriteAtomic(filepath.Join(dir, ConfigFile), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	return nil
}

// checkParams verifies names, shapes, pairing and finiteness of an adapter.
func checkParams(r int, params []*engine.Param) error {
	type pair struct{ a, b *engine.Param }
	pairs := map[string]*pair{}
	var order []string
	for _, p := range params {
		mod, which, ok := Module(p.Name)
		if !ok {
			return fmt.Errorf("tensor %q is not a LoRA tensor name (base_model.model.<module>.lora_A|B.weight)", p.Name)
		}
		if len(p.Shape) != 2 || p.Shape[0] < 1 || p.Shape[1] < 1 {
			return fmt.Errorf("tensor %q: shape %v is not a non-empty matrix", p.Name, p.Shape)
		}
		if len(p.Value) != p.Shape[0]*p.Shape[1] {
			return fmt.Errorf("tensor %q: %d values for shape %v", p.Name, len(p.Value), p.Shape)
		}
		for i, v := range p.Value {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("tensor %q: value %d is %v", p.Name, i, v)
			}
		}
		pr := pairs[mod]
		if pr == nil {
			pr = &pair{}
			pairs[mod] = pr
			order = append(order, mod)
		}
		if which == "A" {
			if pr.a != nil {
				return fmt.Errorf("tensor %q given twice", p.Name)
			}
			if p.Shape[0] != r {
				return fmt.Errorf("tensor %q: shape %v, want [%d, in] for rank %d", p.Name, p.Shape, r, r)
			}
			pr.a = p
		} else {
			if pr.b != nil {
				return fmt.Errorf("tensor %q given twice", p.Name)
			}
			if p.Shape[1] != r {
				return fmt.Errorf("tensor %q: shape %v, want [out, %d] for rank %d", p.Name, p.Shape, r, r)
			}
			pr.b = p
		}
	}
	for _, m := range order {
		if pairs[m].a == nil {
			return fmt.Errorf("module %s: lora_B without lora_A", m)
		}
		if pairs[m].b == nil {
			return fmt.Errorf("module %s: lora_A without lora_B", m)
		}
	}
	return nil
}

// Load reads a PEFT adapter folder: the options from adapter_config.json and
// the tensors (F32, F16 or BF16, converted to float32) from
// adapter_model.safetensors. Params come back sorted by layer, then by module
// (AllowedModules order), A before B, with Grad allocated.
func Load(dir string) (Options, []*engine.Param, error) {
	cfgPath := filepath.Join(dir, ConfigFile)
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return Options{}, nil, fmt.Errorf("lora: load: %w", err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return Options{}, nil, fmt.Errorf("lora: load %s: %w", cfgPath, err)
	}
	var o Options
	var peftType, bias string
	var fanIn bool
	fields := []struct {
		key      string
		dst      any
		required bool
	}{
		{"peft_type", &peftType, true}, {"r", &o.R, true}, {"lora_alpha", &o.Alpha, true},
		{"lora_dropout", &o.Dropout, false}, {"target_modules", &o.TargetModules, true},
		{"bias", &bias, false}, {"fan_in_fan_out", &fanIn, false},
	}
	for _, f := range fields {
		v, ok := cfg[f.key]
		if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			if f.required {
				return Options{}, nil, fmt.Errorf("lora: load %s: key %q missing", cfgPath, f.key)
			}
			continue
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return Options{}, nil, fmt.Errorf("lora: load %s: key %q: %w", cfgPath, f.key, err)
		}
	}
	if peftType != "LORA" {
		return Options{}, nil, fmt.Errorf("lora: load %s: key \"peft_type\": %q, want \"LORA\"", cfgPath, peftType)
	}
	if bias != "" && bias != "none" {
		return Options{}, nil, fmt.Errorf("lora: load %s: key \"bias\": %q is not supported (only \"none\")", cfgPath, bias)
	}
	if fanIn {
		return Options{}, nil, fmt.Errorf("lora: load %s: key \"fan_in_fan_out\": true is not supported", cfgPath)
	}
	if err := o.Validate(); err != nil {
		return Options{}, nil, fmt.Errorf("lora: load %s: %w", cfgPath, err)
	}
	wPath := filepath.Join(dir, WeightsFile)
	f, err := safetensors.Open(wPath)
	if err != nil {
		return Options{}, nil, fmt.Errorf("lora: load: %w", err)
	}
	defer f.Close()
	var params []*engine.Param
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		switch info.DType {
		case safetensors.DTypeF32, safetensors.DTypeF16, safetensors.DTypeBF16:
		default:
			return Options{}, nil, fmt.Errorf("lora: load %s: tensor %q: dtype %s not supported (F32, F16, BF16)", wPath, name, info.DType)
		}
		v, err := f.Float32s(name)
		if err != nil {
			return Options{}, nil, fmt.Errorf("lora: load %s: tensor %q: %w", wPath, name, err)
		}
		params = append(params, &engine.Param{Name: name, Shape: append([]int(nil), info.Shape...), Value: v, Grad: make([]float32, len(v))})
	}
	if len(params) == 0 {
		return Options{}, nil, fmt.Errorf("lora: load %s: no tensors", wPath)
	}
	if err := checkParams(o.R, params); err != nil {
		return Options{}, nil, fmt.Errorf("lora: load %s: %w", wPath, err)
	}
	SortParams(params)
	return o, params, nil
}

var layerRE = regexp.MustCompile(`\.layers\.(\d+)\.`)

// SortParams orders adapter tensors by layer number, then module
// (AllowedModules order), then A before B; other names sort last by name.
func SortParams(params []*engine.Param) {
	type key struct {
		layer, mod int
		rest       string
	}
	keyOf := func(name string) key {
		mod, which, ok := Module(name)
		if !ok {
			return key{math.MaxInt, math.MaxInt, name}
		}
		layer := math.MaxInt
		if m := layerRE.FindStringSubmatch(mod); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil {
				layer = n
			}
		}
		last := mod
		if i := strings.LastIndexByte(mod, '.'); i >= 0 {
			last = mod[i+1:]
		}
		mi := moduleIndex(last)
		if mi < 0 {
			mi = len(modules)
		}
		return key{layer, mi, mod + "\x00" + which}
	}
	sort.SliceStable(params, func(i, j int) bool {
		a, b := keyOf(params[i].Name), keyOf(params[j].Name)
		if a.layer != b.layer {
			return a.layer < b.layer
		}
		if a.mod != b.mod {
			return a.mod < b.mod
		}
		return a.rest < b.rest
	})
}

// Assign copies the values of src into the tensors of dst with the same
// names (e.g. a loaded adapter into an engine's Params). Every tensor of dst
// must be in src with the same shape, and src must hold nothing else.
func Assign(dst, src []*engine.Param) error {
	byName := make(map[string]*engine.Param, len(src))
	for _, p := range src {
		byName[p.Name] = p
	}
	if len(byName) != len(dst) {
		return fmt.Errorf("lora: assign: %d tensors into %d", len(byName), len(dst))
	}
	for _, d := range dst {
		s, ok := byName[d.Name]
		if !ok {
			return fmt.Errorf("lora: assign: tensor %s missing", d.Name)
		}
		if !slices.Equal(s.Shape, d.Shape) || len(s.Value) != len(d.Value) {
			return fmt.Errorf("lora: assign: tensor %s has shape %v, want %v", d.Name, s.Shape, d.Shape)
		}
	}
	for _, d := range dst {
		copy(d.Value, byName[d.Name].Value)
	}
	return nil
}
