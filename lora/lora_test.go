package lora

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/safetensors"
)

func TestValidateNamesKeys(t *testing.T) {
	cases := []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.R = 0 }, "lora.lora_r: must be at least 1, got 0"},
		{func(o *Options) { o.Alpha = 0 }, "lora.lora_alpha"},
		{func(o *Options) { o.Alpha = math.NaN() }, "lora.lora_alpha"},
		{func(o *Options) { o.Dropout = 1 }, "lora.lora_dropout"},
		{func(o *Options) { o.Dropout = -0.1 }, "lora.lora_dropout"},
		{func(o *Options) { o.TargetModules = nil }, "lora.lora_target_modules"},
		{func(o *Options) { o.TargetModules = []string{"q_proj", "qkv"} }, `unknown module "qkv" (allowed: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)`},
		{func(o *Options) { o.TargetModules = []string{"q_proj", "q_proj"} }, "listed twice"},
	}
	for _, c := range cases {
		o := DefaultOptions()
		c.mod(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want error containing %q", o, err, c.want)
		}
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Errorf("DefaultOptions().Validate() = %v", err)
	}
	if s := DefaultOptions().Scale(); s != 2 {
		t.Errorf("Scale() = %v, want 2 (16/8)", s)
	}
}

func TestTargetsShapes(t *testing.T) {
	// TinyLlama-like GQA: hidden 2048, 32 heads, 4 KV heads of 64, FFN 5632.
	o := Options{R: 8, Alpha: 16, TargetModules: []string{"v_proj", "q_proj", "o_proj", "down_proj", "k_proj"}}
	ts, err := Targets(o, 2, 2048, 32, 4, 64, 5632)
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{
		{"model.layers.0.self_attn.q_proj", 2048, 2048},
		{"model.layers.0.self_attn.k_proj", 2048, 256},
		{"model.layers.0.self_attn.v_proj", 2048, 256},
		{"model.layers.0.self_attn.o_proj", 2048, 2048},
		{"model.layers.0.mlp.down_proj", 5632, 2048},
		{"model.layers.1.self_attn.q_proj", 2048, 2048},
		{"model.layers.1.self_attn.k_proj", 2048, 256},
		{"model.layers.1.self_attn.v_proj", 2048, 256},
		{"model.layers.1.self_attn.o_proj", 2048, 2048},
		{"model.layers.1.mlp.down_proj", 5632, 2048},
	}
	if len(ts) != len(want) {
		t.Fatalf("got %d targets, want %d: %v", len(ts), len(want), ts)
	}
	for i := range want {
		if ts[i] != want[i] {
			t.Errorf("target %d = %+v, want %+v", i, ts[i], want[i])
		}
	}
	if _, err := Targets(o, 0, 2048, 32, 4, 64, 5632); err == nil {
		t.Error("Targets with 0 layers: no error")
	}
}

func TestInit(t *testing.T) {
	o := DefaultOptions()
	ts := []Target{{"model.layers.0.self_attn.q_proj", 300, 40}, {"model.layers.0.self_attn.v_proj", 300, 20}}
	ps := Init(o, ts, 7)
	if len(ps) != 4 {
		t.Fatalf("got %d params, want 4", len(ps))
	}
	if ps[0].Name != "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" ||
		ps[1].Name != "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight" {
		t.Errorf("names %q %q", ps[0].Name, ps[1].Name)
	}
	bound := 1 / math.Sqrt(300)
	for _, p := range ps {
		if len(p.Grad) != len(p.Value) {
			t.Errorf("%s: grad length %d, value length %d", p.Name, len(p.Grad), len(p.Value))
		}
		_, which, _ := Module(p.Name)
		if which == "B" {
			if p.Shape[0] == 0 || p.Shape[1] != 8 {
				t.Errorf("%s shape %v", p.Name, p.Shape)
			}
			for _, v := range p.Value {
				if v != 0 {
					t.Fatalf("%s: nonzero B value %v", p.Name, v)
				}
			}
			continue
		}
		if p.Shape[0] != 8 || p.Shape[1] != 300 {
			t.Errorf("%s shape %v, want [8 300]", p.Name, p.Shape)
		}
		// Uniform(-b, b): all inside, mean 0, variance b^2/3 (2400 draws:
		// the mean's sd is b/sqrt(7200) ~ 0.012 b, the variance's relative sd ~ 2%).
		var s, s2 float64
		for _, v := range p.Value {
			if math.Abs(float64(v)) > bound {
				t.Fatalf("%s: %v outside ±%v", p.Name, v, bound)
			}
			s += float64(v)
			s2 += float64(v) * float64(v)
		}
		n := float64(len(p.Value))
		mean, vr := s/n, s2/n-(s/n)*(s/n)
		if math.Abs(mean) > 0.06*bound {
			t.Errorf("%s: mean %v, want ~0 (bound %v)", p.Name, mean, bound)
		}
		if math.Abs(vr/(bound*bound/3)-1) > 0.1 {
			t.Errorf("%s: variance %v, want ~%v", p.Name, vr, bound*bound/3)
		}
	}
	// Deterministic, seed-dependent, and independent of the other targets.
	again := Init(o, ts[:1], 7)
	for i, v := range again[0].Value {
		if math.Float32bits(v) != math.Float32bits(ps[0].Value[i]) {
			t.Fatalf("Init not reproducible at %d", i)
		}
	}
	other := Init(o, ts[:1], 8)
	same := 0
	for i, v := range other[0].Value {
		if v == ps[0].Value[i] {
			same++
		}
	}
	if same > 10 {
		t.Errorf("seeds 7 and 8 agree on %d values", same)
	}
	if ps[0].Value[0] == ps[2].Value[0] && ps[0].Value[1] == ps[2].Value[1] {
		t.Error("q_proj and v_proj A start equal")
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "adapter")
	o := DefaultOptions()
	ts, _ := Targets(o, 2, 16, 4, 2, 4, 40)
	ps := Init(o, ts, 1)
	for _, p := range ps {
		for i := range p.Value {
			p.Value[i] += float32(i%7) * 1e-3
		}
	}
	if err := Save(dir, o, "lmsys/vicuna-7b-v1.5", ps); err != nil {
		t.Fatal(err)
	}
	o2, ps2, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if o2.R != o.R || o2.Alpha != o.Alpha || o2.Dropout != o.Dropout || strings.Join(o2.TargetModules, ",") != "q_proj,v_proj" {
		t.Errorf("options %+v, want %+v", o2, o)
	}
	if len(ps2) != len(ps) {
		t.Fatalf("loaded %d params, want %d", len(ps2), len(ps))
	}
	for i := range ps {
		// Init order (layer, module, A, B) is the sorted order too.
		if ps2[i].Name != ps[i].Name || !slices.Equal(ps2[i].Shape, ps[i].Shape) {
			t.Fatalf("param %d: %s %v, want %s %v", i, ps2[i].Name, ps2[i].Shape, ps[i].Name, ps[i].Shape)
		}
		for j := range ps[i].Value {
			if math.Float32bits(ps2[i].Value[j]) != math.Float32bits(ps[i].Value[j]) {
				t.Fatalf("%s[%d] = %v, want %v", ps[i].Name, j, ps2[i].Value[j], ps[i].Value[j])
			}
		}
	}
	// The config has what peft.LoraConfig needs, checked by Python's json.
	py := `import json,sys
c=json.load(open(sys.argv[1]))
assert c["peft_type"]=="LORA" and c["task_type"]=="CAUSAL_LM", c
assert c["r"]==8 and c["lora_alpha"]==16 and abs(c["lora_dropout"]-0.05)<1e-12, c
assert c["target_modules"]==["q_proj","v_proj"], c
assert c["bias"]=="none" and c["fan_in_fan_out"] is False and c["inference_mode"] is True, c
assert c["modules_to_save"] is None and c["layers_to_transform"] is None and c["init_lora_weights"] is True, c
assert c["base_model_name_or_path"]=="lmsys/vicuna-7b-v1.5", c
print("ok")`
	if _, err := exec.LookPath("python3"); err == nil {
		out, err := exec.Command("python3", "-c", py, filepath.Join(dir, ConfigFile)).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("python check of %s: %v\n%s", ConfigFile, err, out)
		}
	}
	// Tensor names in the file are PEFT's (no adapter name inside).
	f, err := safetensors.Open(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.Info("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"); !ok {
		t.Errorf("weights lack PEFT name; have %v", f.Names())
	}
}

func TestLoadPEFTWrittenConfigAndHalfPrecision(t *testing.T) {
	// adapter_config.json as recent PEFT writes it, with keys rella ignores.
	dir := t.TempDir()
	cfg := `{
  "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "lmsys/vicuna-13b-v1.3",
  "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
  "layer_replication": null, "layers_pattern": null, "layers_to_transform": null, "loftq_config": {},
  "lora_alpha": 16, "lora_dropout": 0.05, "megatron_config": null, "megatron_core": "megatron.core",
  "modules_to_save": null, "peft_type": "LORA", "r": 2, "rank_pattern": {}, "revision": null,
  "target_modules": ["v_proj", "q_proj"], "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false
}`
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte(cfg), 0o644)
	a := []float32{0.5, -0.25, 1.5, 3, 0.125, -2} // exact in F16 and BF16
	b := []float32{1, 2, -1, 0.5, 0.75, -0.375}
	err := safetensors.Write(filepath.Join(dir, WeightsFile), []safetensors.Tensor{
		safetensors.F16("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", []int{2, 3}, a),
		safetensors.BF16("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", []int{3, 2}, b),
		safetensors.F16("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", []int{2, 3}, a),
		safetensors.F32("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", []int{3, 2}, b),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o, ps, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if o.R != 2 || o.Alpha != 16 {
		t.Errorf("options %+v", o)
	}
	wantNames := []string{"q_proj.lora_A", "q_proj.lora_B", "v_proj.lora_A", "v_proj.lora_B"}
	for i, p := range ps {
		if !strings.Contains(p.Name, wantNames[i]) {
			t.Errorf("param %d is %s, want ...%s", i, p.Name, wantNames[i])
		}
		want := a
		if strings.Contains(p.Name, "lora_B") {
			want = b
		}
		for j := range want {
			if p.Value[j] != want[j] {
				t.Errorf("%s[%d] = %v, want %v", p.Name, j, p.Value[j], want[j])
			}
		}
	}
}

func TestSaveRefusesEmptyOrBrokenAdapters(t *testing.T) {
	o := DefaultOptions()
	ts := []Target{{"model.layers.0.self_attn.q_proj", 4, 4}}
	cases := map[string]func() []*engine.Param{
		"no adapter tensors": func() []*engine.Param { return nil },
		"lora_A without lora_B": func() []*engine.Param {
			return Init(o, ts, 1)[:1]
		},
		"is not a LoRA tensor name": func() []*engine.Param {
			ps := Init(o, ts, 1)
			ps[0].Name = "model.layers.0.self_attn.q_proj.weight"
			return ps
		},
		"values for shape": func() []*engine.Param {
			ps := Init(o, ts, 1)
			ps[1].Value = ps[1].Value[:3]
			return ps
		},
		"is NaN": func() []*engine.Param {
			ps := Init(o, ts, 1)
			ps[0].Value[2] = float32(math.NaN())
			return ps
		},
		"for rank 8": func() []*engine.Param {
			return Init(Options{R: 4, Alpha: 8, TargetModules: []string{"q_proj"}}, ts, 1)
		},
	}
	for want, mk := range cases {
		dir := filepath.Join(t.TempDir(), "a")
		err := Save(dir, o, "m", mk())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Save: %v, want error containing %q", err, want)
		}
		if _, err := os.Stat(filepath.Join(dir, WeightsFile)); err == nil {
			t.Errorf("%s: weights file written despite the error", want)
		}
	}
}

func TestLoadErrorsNameOrigin(t *testing.T) {
	o := DefaultOptions()
	ps := Init(o, []Target{{"model.layers.0.self_attn.q_proj", 4, 4}}, 1)
	dir := t.TempDir()
	if err := Save(dir, o, "m", ps); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, ConfigFile)
	good, _ := os.ReadFile(cfgPath)
	var m map[string]any
	json.Unmarshal(good, &m)
	m["peft_type"] = "PREFIX_TUNING"
	bad, _ := json.Marshal(m)
	os.WriteFile(cfgPath, bad, 0o644)
	if _, _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "peft_type") || !strings.Contains(err.Error(), ConfigFile) {
		t.Errorf("wrong peft_type: %v", err)
	}
	delete(m, "r")
	m["peft_type"] = "LORA"
	bad, _ = json.Marshal(m)
	os.WriteFile(cfgPath, bad, 0o644)
	if _, _, err := Load(dir); err == nil || !strings.Contains(err.Error(), `"r" missing`) {
		t.Errorf("missing r: %v", err)
	}
	os.WriteFile(cfgPath, good, 0o644)
	os.Remove(filepath.Join(dir, WeightsFile))
	if _, _, err := Load(dir); err == nil || !strings.Contains(err.Error(), WeightsFile) {
		t.Errorf("missing weights: %v", err)
	}
}

func TestAssign(t *testing.T) {
	o := DefaultOptions()
	ts := []Target{{"model.layers.0.self_attn.q_proj", 4, 6}, {"model.layers.0.self_attn.v_proj", 4, 2}}
	dst := Init(o, ts, 1)
	src := Init(o, ts, 2)
	src[1].Value[0] = 3
	// Order does not matter: names do.
	rev := []*engine.Param{src[3], src[2], src[1], src[0]}
	if err := Assign(dst, rev); err != nil {
		t.Fatal(err)
	}
	for i := range dst {
		for j := range dst[i].Value {
			if dst[i].Value[j] != src[i].Value[j] {
				t.Fatalf("%s[%d] = %v, want %v", dst[i].Name, j, dst[i].Value[j], src[i].Value[j])
			}
		}
	}
	if err := Assign(dst, src[:3]); err == nil {
		t.Error("missing tensor: no error")
	}
	other := Init(o, []Target{{"model.layers.0.self_attn.q_proj", 5, 6}, {"model.layers.0.self_attn.v_proj", 4, 2}}, 1)
	if err := Assign(dst, other); err == nil || !strings.Contains(err.Error(), "shape [8 5]") {
		t.Errorf("shape mismatch: %v", err)
	}
}
