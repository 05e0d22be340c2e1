package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreThePapers(t *testing.T) {
	c := Default()
	if c.LoRA.R != 8 || c.LoRA.Alpha != 16 || c.LoRA.Dropout != 0.05 || strings.Join(c.LoRA.TargetModules, ",") != "q_proj,v_proj" {
		t.Errorf("lora defaults: got %+v, want r=8 alpha=16 dropout=0.05 on q_proj,v_proj", c.LoRA)
	}
	if c.Training.LearningRate != 1e-3 || c.Training.LRScheduler != "linear" || c.Training.WarmupSteps != 0 || c.Training.WeightDecay != 0 {
		t.Errorf("training defaults: got %+v", c.Training)
	}
	if c.Training.AdamBeta1 != 0.9 || c.Training.AdamBeta2 != 0.999 || c.Training.AdamEpsilon != 1e-8 {
		t.Errorf("adam defaults: got %v %v %v", c.Training.AdamBeta1, c.Training.AdamBeta2, c.Training.AdamEpsilon)
	}
	if c.Retrieval.Dim != 512 || c.Data.MinHistory != 5 || c.Data.SampleSeed != 42 {
		t.Errorf("retrieval/data defaults: got %+v %+v", c.Retrieval, c.Data)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestLoadAndOverride(t *testing.T) {
	p := writeConfig(t, "output_dir: out\ndata:\n  history_len: 7\n  dir: somewhere\nlora:\n  lora_r: 4\n")
	c, err := Load(p, []string{"data.history_len=12", "seed=7", "lora.lora_target_modules=[q_proj, k_proj]", "training.learning_rate=2e-4"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Data.HistoryLen != 12 || c.Seed != 7 || c.LoRA.R != 4 || c.Data.Dir != "somewhere" || c.OutputDir != "out" {
		t.Errorf("got history_len=%d seed=%d r=%d dir=%q output_dir=%q", c.Data.HistoryLen, c.Seed, c.LoRA.R, c.Data.Dir, c.OutputDir)
	}
	if strings.Join(c.LoRA.TargetModules, ",") != "q_proj,k_proj" || c.Training.LearningRate != 2e-4 {
		t.Errorf("got modules %v lr %v", c.LoRA.TargetModules, c.Training.LearningRate)
	}
	// Untouched keys keep their defaults.
	if c.LoRA.Alpha != 16 {
		t.Errorf("lora_alpha: got %v, want default 16", c.LoRA.Alpha)
	}
}

func TestBadConfigsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, body string
		overrides  []string
		want       []string
	}{
		{"unknown key", "data:\n  dir: x\n  histroy_len: 3\n", nil, []string{":3:", "unknown key data.histroy_len", "did you mean data.history_len", "allowed here:"}},
		{"unknown section", "trainng:\n  learning_rate: 1\n", nil, []string{":1:", "unknown key trainng", "did you mean training"}},
		{"wrong type", "data:\n  history_len: five\n", nil, []string{":2:", "data.history_len", "want an integer", `"five"`}},
		{"list expected", "lora:\n  lora_target_modules: q_proj\n", nil, []string{":2:", "lora.lora_target_modules", "want a list"}},
		{"out of range", "output_dir: o\ndata:\n  history_len: 0\n", nil, []string{":3:", "data.history_len", "at least 1"}},
		{"bad enum", "model:\n  device: tpu\n", nil, []string{":2:", "model.device", "cpu or gpu"}},
		{"bad quantize", "model:\n  quantize: int4\n", nil, []string{":2:", "model.quantize", "int8"}},
		{"duplicate", "seed: 1\nseed: 2\n", nil, []string{":2:", "seed", "given twice"}},
		{"bad yaml", "data: [\n", nil, []string{"run.yaml"}},
		{"override unknown", "", []string{"data.histry_len=3"}, []string{"override data.histry_len", "unknown key", "did you mean data.history_len"}},
		{"override type", "", []string{"training.num_epochs=lots"}, []string{"override training.num_epochs=lots", "want an integer"}},
		{"override syntax", "", []string{"seed"}, []string{`override "seed"`, "key=value"}},
	}
	for _, c := range cases {
		p := writeConfig(t, c.body)
		_, err := Load(p, c.overrides)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
		if len(c.overrides) == 0 && !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not name the file %s", c.name, err, p)
		}
	}
}

// A value that fails validation after a key=value override is named by the
// override, not by the line of the file (or preset) whose value it replaced.
func TestOverrideErrorsNameTheOverride(t *testing.T) {
	p := writeConfig(t, "output_dir: o\nmodel:\n  device: cpu\ndata:\n  history_len: 5\n")
	cases := []struct {
		path      string
		overrides []string
		want      string
	}{
		{p, []string{"model.device=tpu"}, "override model.device=tpu: model.device: must be cpu or gpu"},
		{p, []string{"data.history_len=9", "data.history_len=0"}, "override data.history_len=0: data.history_len"},
		{p, []string{"evaluation.split=dev"}, "override evaluation.split=dev: evaluation.split"},
		{"quickstart", []string{"model.device=tpu"}, "override model.device=tpu: model.device"},
	}
	for _, c := range cases {
		_, err := Load(c.path, c.overrides)
		if err == nil {
			t.Errorf("%v: no error", c.overrides)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %q, want it to contain %q", c.overrides, err, c.want)
		}
		if strings.Contains(err.Error(), ".yaml:") {
			t.Errorf("%v: error %q names a file line, but the override set the value", c.overrides, err)
		}
	}
	// without an override the file's line is still named
	q := writeConfig(t, "model:\n  device: tpu\n")
	if _, err := Load(q, []string{"data.history_len=3"}); err == nil || !strings.Contains(err.Error(), q+":2: model.device") {
		t.Errorf("file value: error %v, want %s:2", err, q)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") || !strings.Contains(err.Error(), "presets") {
		t.Errorf("got %v, want an error naming the file and listing presets", err)
	}
}

func TestPresetsLoad(t *testing.T) {
	names := Presets()
	for _, want := range []string{"quickstart", "ml1m-zeroshot", "ml1m-zeroshot-subr", "ml1m-reit", "ml1m-reit-v100", "ml25m-zeroshot", "ml25m-zeroshot-subr", "ml25m-reit", "bookcrossing-zeroshot", "bookcrossing-zeroshot-subr", "bookcrossing-reit"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("preset %s missing (have %v)", want, names)
		}
	}
	for _, n := range names {
		c, err := Load(n, nil)
		if err != nil {
			t.Errorf("preset %s: %v", n, err)
			continue
		}
		if c.OutputDir == "" || c.Data.Dir == "" {
			t.Errorf("preset %s: empty output_dir or data.dir", n)
		}
	}
	// A path to the file in the repository resolves to the same preset.
	if _, err := Load("configs/quickstart.yaml", nil); err != nil {
		t.Errorf("configs/quickstart.yaml: %v", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c := Default()
	c.Data.HistoryLen = 9
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("saved", b, nil)
	if err != nil {
		t.Fatalf("a saved config does not load back: %v\n%s", err, b)
	}
	if back.Data.HistoryLen != 9 {
		t.Errorf("history_len: got %d, want 9", back.Data.HistoryLen)
	}
}

// TestHFTrainingKeys: lr_scheduler cosine, warmup_ratio and
// overwrite_output_dir parse, default as HF's (ratio 0, no overwrite),
// are checked with file, line and key, and a misspelling gets a suggestion.
func TestHFTrainingKeys(t *testing.T) {
	d := Default().Training
	if d.WarmupRatio != 0 || d.OverwriteOutputDir || d.LoggingSteps != 0 {
		t.Errorf("defaults: warmup_ratio %v overwrite_output_dir %v logging_steps %d", d.WarmupRatio, d.OverwriteOutputDir, d.LoggingSteps)
	}
	p := writeConfig(t, "training:\n  lr_scheduler: cosine\n  warmup_ratio: 0.03\n  overwrite_output_dir: true\n")
	c, err := Load(p, []string{"training.logging_steps=10"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Training.LRScheduler != "cosine" || c.Training.WarmupRatio != 0.03 || !c.Training.OverwriteOutputDir || c.Training.LoggingSteps != 10 {
		t.Errorf("got %+v", c.Training)
	}
	bad := writeConfig(t, "seed: 1\ntraining:\n  warmup_ratio: 1.5\n")
	if _, err := Load(bad, nil); err == nil || err.Error() != "config "+bad+":3: training.warmup_ratio: must be in [0, 1], got 1.5" {
		t.Errorf("bad ratio: %v", err)
	}
	if _, err := Load(p, []string{"training.lr_scheduler=cosin"}); err == nil || !strings.Contains(err.Error(), `"cosin" is not one of linear, cosine, constant`) {
		t.Errorf("bad scheduler: %v", err)
	}
	typo := writeConfig(t, "training:\n  warmup_ration: 0.1\n")
	if _, err := Load(typo, nil); err == nil || !strings.Contains(err.Error(), "did you mean training.warmup_ratio?") {
		t.Errorf("typo: %v", err)
	}
	if _, err := Load(p, []string{"training.overwrite_output_dir=yes please"}); err == nil || !strings.Contains(err.Error(), "want true or false") {
		t.Errorf("bad bool: %v", err)
	}
}

// model.quantize takes int8 or none on either device, and model.dtype fp16
// is a GPU training precision (the trainer adds dynamic loss scaling).
func TestQuantizeAndFP16(t *testing.T) {
	for _, o := range [][]string{
		{"model.quantize=int8"}, {"model.quantize=none"},
		{"model.device=gpu", "model.dtype=fp16", "model.quantize=int8"},
		{"model.device=gpu", "model.dtype=fp16", "stages=[prepare,train]"},
	} {
		c, err := Load("quickstart", o)
		if err != nil {
			t.Errorf("%v: %v", o, err)
			continue
		}
		if c.Model.Quantize == "" && strings.Contains(o[len(o)-1], "quantize") {
			t.Errorf("%v: quantize not set", o)
		}
	}
	if _, err := Load("quickstart", []string{"model.quantize=INT8"}); err == nil || !strings.Contains(err.Error(), "model.quantize") {
		t.Errorf("INT8: error %v, want one naming model.quantize", err)
	}
}

// The V100 preset is ml1m-reit in fp16 with int8 base weights.
func TestV100Preset(t *testing.T) {
	v, err := Load("ml1m-reit-v100", nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load("ml1m-reit", nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.Model.DType != "fp16" || v.Model.Quantize != "int8" || v.Model.Device != "gpu" {
		t.Errorf("model section %+v", v.Model)
	}
	if v.Training != r.Training || v.Data.HistoryLen != r.Data.HistoryLen || v.LoRA.R != r.LoRA.R {
		t.Errorf("training/data/lora differ from ml1m-reit")
	}
}

// The baseline section is checked like the others: unknown keys and bad
// values name the file, line and key; lists override the defaults whole.
func TestBaselineSection(t *testing.T) {
	for _, c := range []struct {
		body string
		want []string
	}{
		{"baseline:\n  model: din\n  embeding_size: 8\n", []string{":3:", "unknown key baseline.embeding_size", "did you mean baseline.embedding_size"}},
		{"baseline:\n  model: gbdt\n", []string{":2:", "baseline.model", "deepfm, dcnv2, din, sim, sasrec"}},
		{"baseline:\n  hidden: [64, 0]\n", []string{":2:", "baseline.hidden"}},
		{"baseline:\n  learning_rate: 0\n", []string{":2:", "baseline.learning_rate"}},
		{"baseline:\n  epochs: many\n", []string{":2:", "baseline.epochs", "want an integer"}},
	} {
		p := writeConfig(t, c.body)
		_, err := Load(p, nil)
		if err == nil {
			t.Errorf("%q: no error", c.body)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not contain %q", c.body, err, w)
			}
		}
	}
	c, err := Load("ml1m-baselines", []string{"baseline.hidden=[64]", "baseline.model=din"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Baseline.Hidden) != 1 || c.Baseline.Hidden[0] != 64 || c.Baseline.Model != "din" || c.Baseline.HistoryLen != 30 {
		t.Errorf("ml1m-baselines with overrides: %+v", c.Baseline)
	}
	for _, n := range []string{"ml1m-baselines", "bookcrossing-baselines", "ml25m-baselines"} {
		if _, err := Load(n, nil); err != nil {
			t.Errorf("preset %s: %v", n, err)
		}
	}
}
