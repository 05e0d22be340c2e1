// Package configs loads a rella run configuration from YAML: one typed
// struct with a section per stage, strict decoding (an unknown or misspelled
// key, a wrong type or an out-of-range value is an error naming the file,
// line and dotted key), paper defaults, and key=value overrides with dotted
// paths from the command line.
package configs

import (
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/prompt"
	"github.com/rella-project/rella/retrieval"
	"github.com/rella-project/rella/trainer"
)

// Config is a whole run: which data, which model, and how to score, retrieve
// and train. Key names follow HF TrainingArguments and axolotl where one exists.
type Config struct {
	Seed       int64             `yaml:"seed"`       // seed for everything the authors did not fix (LoRA init, dropout, epoch order)
	OutputDir  string            `yaml:"output_dir"` // where every stage writes
	Stages     []string          `yaml:"stages"`     // what `rella run` does, in order
	Data       data.Options      `yaml:"data"`
	Prompt     prompt.Options    `yaml:"prompt"`
	Model      Model             `yaml:"model"`
	LoRA       lora.Options      `yaml:"lora"`
	Training   trainer.Options   `yaml:"training"`
	Retrieval  retrieval.Options `yaml:"retrieval"`
	Evaluation Evaluation        `yaml:"evaluation"`
	Generate   Generate          `yaml:"generate"`
	Baseline   Baseline          `yaml:"baseline"` // the ID-based CTR baselines (`rella baseline`)
}

// Model says which checkpoint to load and where to run it.
type Model struct {
	Path        string `yaml:"path"`         // local HF-format folder: config.json, safetensors, tokenizer files
	Tokenizer   string `yaml:"tokenizer"`    // tokenizer folder or file; empty = model.path
	Adapter     string `yaml:"adapter"`      // optional PEFT LoRA adapter folder applied when scoring
	Device      string `yaml:"device"`       // cpu | gpu
	DeviceIndex int    `yaml:"device_index"` // which GPU
	DType       string `yaml:"dtype"`        // float32 | float64 on cpu; bf16 | fp16 | float32 on gpu (fp16 trains with dynamic loss scaling)
	// Quantize is "none" (default) or "int8": the decoder layers' frozen
	// projection weights are quantised at load time to int8 with one scale
	// per output row (absmax) and dequantised for each GEMM, on the GPU and
	// the CPU engine alike; the embedding, norms, LM head and LoRA stay in
	// model.dtype.
	Quantize  string `yaml:"quantize"`
	BatchSize int    `yaml:"batch_size"` // sequences per forward when scoring and embedding
}

// Evaluation configures scoring (zero-shot and after training).
type Evaluation struct {
	Split string `yaml:"split"` // split `rella score` scores by default: test | valid | train
}

// Generate lets a run make its own inputs: the synthetic dataset and the
// small random model the quickstart uses. Nothing is generated over existing files.
type Generate struct {
	Data      bool    `yaml:"data"`       // write a synthetic ML-1M-format dataset into data.dir when it is missing
	DataUsers int     `yaml:"data_users"` // users in the synthetic dataset
	DataItems int     `yaml:"data_items"` // movies in the synthetic dataset
	Model     bool    `yaml:"model"`      // write a random LLaMA into model.path when it is missing
	Tokenizer string  `yaml:"tokenizer"`  // tokenizer folder copied beside the generated model
	Hidden    int     `yaml:"hidden"`
	Layers    int     `yaml:"layers"`
	Heads     int     `yaml:"heads"`
	KVHeads   int     `yaml:"kv_heads"`
	FFN       int     `yaml:"intermediate"`
	InitStd   float64 `yaml:"init_std"` // standard deviation of the random weights (HF's initializer_range, 0.02)
}

// Stage names `rella run` knows, in their natural order.
var stageOrder = []string{"prepare", "embed", "retrieve", "score", "train"}

// Stages returns the stage names a config may list, in pipeline order.
func StageNames() []string { return append([]string(nil), stageOrder...) }

// Default returns the paper's settings (RELLA.md section 5) for ML-1M.
func Default() Config {
	return Config{
		Seed:       42,
		OutputDir:  "runs/default",
		Stages:     []string{"prepare", "score"},
		Data:       data.DefaultOptions(),
		Prompt:     prompt.DefaultOptions(),
		Model:      Model{Device: "cpu", DType: "float32", BatchSize: 8},
		LoRA:       lora.DefaultOptions(),
		Training:   trainer.DefaultOptions(),
		Retrieval:  retrieval.DefaultOptions(),
		Evaluation: Evaluation{Split: "test"},
		Generate:   Generate{DataUsers: 120, DataItems: 150, Hidden: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 172, InitStd: 0.02},
		Baseline:   DefaultBaseline(),
	}
}

// Validate checks the values that no section checks for itself and then
// every section. Each error starts with its dotted key.
func (c *Config) Validate() error {
	var errs []error
	if c.OutputDir == "" {
		errs = append(errs, errors.New("output_dir: must name a folder"))
	}
	for _, s := range c.Stages {
		if !contains(stageOrder, s) {
			errs = append(errs, fmt.Errorf("stages: unknown stage %q (allowed: %s)", s, strings.Join(stageOrder, ", ")))
		}
	}
	switch c.Model.Device {
	case "cpu":
		if c.Model.DType != "float32" && c.Model.DType != "float64" {
			errs = append(errs, fmt.Errorf("model.dtype: must be float32 or float64 on the cpu, got %q", c.Model.DType))
		}
	case "gpu":
		if c.Model.DType != "bf16" && c.Model.DType != "fp16" && c.Model.DType != "float32" {
			errs = append(errs, fmt.Errorf("model.dtype: must be bf16, fp16 or float32 on the gpu, got %q", c.Model.DType))
		}
	default:
		errs = append(errs, fmt.Errorf("model.device: must be cpu or gpu, got %q", c.Model.Device))
	}
	if err := model.CheckQuantization(c.Model.Quantize); err != nil {
		errs = append(errs, err)
	}
	if c.Model.DeviceIndex < 0 {
		errs = append(errs, fmt.Errorf("model.device_index: must not be negative, got %d", c.Model.DeviceIndex))
	}
	if c.Model.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("model.batch_size: must be at least 1, got %d", c.Model.BatchSize))
	}
	switch c.Evaluation.Split {
	case "train", "valid", "test":
	default:
		errs = append(errs, fmt.Errorf("evaluation.split: must be train, valid or test, got %q", c.Evaluation.Split))
	}
	if c.Generate.Data && (c.Generate.DataUsers < 1 || c.Generate.DataItems < 1) {
		errs = append(errs, errors.New("generate.data_users: generate.data_users and generate.data_items must be positive"))
	}
	if c.Generate.Model && (c.Generate.Hidden < 1 || c.Generate.Layers < 1 || c.Generate.Heads < 1 || c.Generate.KVHeads < 1 || c.Generate.FFN < 1 || !(c.Generate.InitStd > 0)) {
		errs = append(errs, errors.New("generate.hidden: generate.hidden, layers, heads, kv_heads and intermediate must be positive"))
	}
	for _, v := range []interface{ Validate() error }{c.Data, c.Prompt, c.LoRA, c.Training, c.Retrieval, c.Baseline} {
		if err := v.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

//go:embed *.yaml
var presets embed.FS

// Presets lists the names of the configs built into the binary.
func Presets() []string {
	entries, _ := presets.ReadDir(".")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return names
}

// Load reads a config file (or, when no such file exists, a built-in preset
// of that name, e.g. "quickstart" or "configs/quickstart.yaml"), applies the
// key=value overrides in order, fills defaults and validates everything.
func Load(path string, overrides []string) (*Config, error) {
	src, name, err := read(path)
	if err != nil {
		return nil, err
	}
	return Parse(name, src, overrides)
}

func read(path string) ([]byte, string, error) {
	src, err := os.ReadFile(path)
	if err == nil {
		return src, path, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("config %s: %w", path, err)
	}
	base := strings.TrimSuffix(filepath.Base(path), ".yaml") + ".yaml"
	if b, perr := presets.ReadFile(base); perr == nil {
		return b, "preset " + base, nil
	}
	return nil, "", fmt.Errorf("config %s: no such file, and no built-in preset of that name (presets: %s)", path, strings.Join(Presets(), ", "))
}

// Parse decodes src (named name in errors) over the defaults.
func Parse(name string, src []byte, overrides []string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return nil, fmt.Errorf("config %s: %v", name, cleanYAMLError(err))
	}
	if len(root.Content) == 0 { // empty document
		root = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	doc := root.Content[0]
	cfg := Default()
	if err := check(name, doc, reflect.TypeOf(cfg), ""); err != nil {
		return nil, err
	}
	for _, ov := range overrides {
		if err := override(doc, ov); err != nil {
			return nil, err
		}
	}
	// a value that fails validation is named by the override that set it,
	// not by the line of the file it replaced
	where := func(key string) string {
		for i := len(overrides) - 1; i >= 0; i-- { // the last override of a key wins
			k, _, _ := strings.Cut(overrides[i], "=")
			if key == k || strings.HasPrefix(key, k+".") {
				return "override " + overrides[i]
			}
		}
		if l := lineOf(doc, strings.Split(key, ".")); l > 0 {
			return fmt.Sprintf("config %s:%d", name, l)
		}
		return "config " + name
	}
	// check has vetted every key and scalar, so this decode fills in
	// the values over the defaults.
	if err := doc.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("config %s: %v", name, cleanYAMLError(err))
	}
	if err := cfg.Validate(); err != nil {
		return nil, locate(name, where, err)
	}
	return &cfg, nil
}

// check walks a mapping node against a struct type, reporting unknown keys
// (with the allowed ones and a close match) and values of the wrong type,
// each with its line and dotted key.
func check(file string, n *yaml.Node, t reflect.Type, prefix string) error {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Tag == "!!null" {
				return nil
			}
			return fmt.Errorf("config %s:%d: %s: want a mapping of keys (%s), got %s", file, n.Line, keyName(prefix), strings.Join(yamlKeys(t), ", "), describe(n))
		}
		fields := yamlFields(t)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(prefix, k.Value)
			if line, dup := seen[k.Value]; dup {
				return fmt.Errorf("config %s:%d: %s: given twice (first on line %d)", file, k.Line, key, line)
			}
			seen[k.Value] = k.Line
			f, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("config %s:%d: unknown key %s", file, k.Line, key)
				if s := closest(k.Value, yamlKeys(t)); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", join(prefix, s))
				}
				return fmt.Errorf("%s; allowed here: %s", msg, strings.Join(yamlKeys(t), ", "))
			}
			if err := check(file, v, f.Type, key); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			if n.Tag == "!!null" {
				return nil
			}
			return fmt.Errorf("config %s:%d: %s: want a list, got %s", file, n.Line, prefix, describe(n))
		}
		for _, item := range n.Content {
			if err := check(file, item, t.Elem(), prefix); err != nil {
				return err
			}
		}
		return nil
	default:
		if n.Kind != yaml.ScalarNode {
			return fmt.Errorf("config %s:%d: %s: want %s, got %s", file, n.Line, prefix, kindName(t), describe(n))
		}
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			return fmt.Errorf("config %s:%d: %s: want %s, got %q", file, n.Line, prefix, kindName(t), n.Value)
		}
		return nil
	}
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func keyName(prefix string) string {
	if prefix == "" {
		return "the config"
	}
	return prefix
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

type fieldInfo struct {
	Type reflect.Type
}

func yamlFields(t reflect.Type) map[string]fieldInfo {
	m := map[string]fieldInfo{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = fieldInfo{Type: f.Type}
	}
	return m
}

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for k := range yamlFields(t) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// closest returns the allowed key nearest to k by edit distance, if close.
func closest(k string, allowed []string) string {
	best, bestD := "", 1<<30
	for _, a := range allowed {
		if d := editDistance(k, a); d < bestD {
			best, bestD = a, d
		}
	}
	if bestD <= 2 || (bestD <= len(k)/3 && bestD < 5) {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// override applies one "dotted.key=value" to the document, creating the
// mappings on the way. The value is parsed as YAML ("[a, b]" is a list).
func override(doc *yaml.Node, ov string) error {
	key, val, ok := strings.Cut(ov, "=")
	if !ok || key == "" {
		return fmt.Errorf("override %q: want key=value with a dotted key, e.g. data.history_len=15", ov)
	}
	var vn yaml.Node
	if err := yaml.Unmarshal([]byte(val), &vn); err != nil {
		return fmt.Errorf("override %s: value %q is not valid YAML: %v", key, val, cleanYAMLError(err))
	}
	value := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: ""}
	if len(vn.Content) > 0 {
		value = vn.Content[0]
	}
	// Check the key and value against the schema before touching the document.
	parts := strings.Split(key, ".")
	t := reflect.TypeOf(Config{})
	for i, p := range parts {
		if t.Kind() != reflect.Struct {
			return fmt.Errorf("override %s: %s is not a section", key, strings.Join(parts[:i], "."))
		}
		f, ok := yamlFields(t)[p]
		if !ok {
			msg := fmt.Sprintf("override %s: unknown key %s", key, join(strings.Join(parts[:i], "."), p))
			if s := closest(p, yamlKeys(t)); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", join(strings.Join(parts[:i], "."), s))
			}
			return fmt.Errorf("%s; allowed here: %s", msg, strings.Join(yamlKeys(t), ", "))
		}
		t = f.Type
	}
	if err := check("override", value, t, key); err != nil {
		return fmt.Errorf("override %s=%s: %v", key, val, strings.TrimPrefix(err.Error(), "config override:1: "))
	}
	node := doc
	for i, p := range parts {
		var next *yaml.Node
		for j := 0; j+1 < len(node.Content); j += 2 {
			if node.Content[j].Value == p {
				next = node.Content[j+1]
				if i == len(parts)-1 {
					node.Content[j+1] = value
				}
				break
			}
		}
		if next == nil {
			if i == len(parts)-1 {
				next = value
			} else {
				next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			}
			node.Content = append(node.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}, next)
		}
		if i < len(parts)-1 && next.Kind != yaml.MappingNode {
			// a null section (e.g. "data:" with nothing under it) becomes a mapping
			*next = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		node = next
	}
	return nil
}

var dottedKey = regexp.MustCompile(`^([a-z0-9_]+(?:\.[a-z0-9_]+)*): `)

// locate prefixes each validation error with where its key was set: the
// key=value override that set it, or the file and, where the key is written
// in the file, its line; defaults that fail name only the file and key.
func locate(file string, where func(key string) string, err error) error {
	var lines []string
	for _, line := range strings.Split(err.Error(), "\n") {
		at := "config " + file
		if m := dottedKey.FindStringSubmatch(line); m != nil {
			at = where(m[1])
		}
		lines = append(lines, at+": "+line)
	}
	return errors.New(strings.Join(lines, "\n"))
}

func lineOf(n *yaml.Node, path []string) int {
	for i, p := range path {
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == p {
				if i == len(path)-1 {
					return n.Content[j].Line
				}
				next = n.Content[j+1]
				break
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	return 0
}

var yamlPrefix = regexp.MustCompile(`^yaml: (unmarshal errors:\n\s*)?`)

func cleanYAMLError(err error) string {
	return strings.TrimSpace(yamlPrefix.ReplaceAllString(err.Error(), ""))
}

// Marshal renders the config as YAML (the effective config a run saves).
func (c *Config) Marshal() ([]byte, error) {
	return yaml.Marshal(c)
}
