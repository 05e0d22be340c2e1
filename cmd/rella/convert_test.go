package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/safetensors"
)

// twinFolder assembles, in a temporary folder, the safetensors twin of a
// .bin fixture: its companions (config, tokenizer, ...) and its
// model.fp16.safetensors.ref as model.safetensors.
func twinFolder(t *testing.T, binDir string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "twin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(binDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "pytorch_model") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(binDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "model.fp16.safetensors.ref" {
			name = "model.safetensors"
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func logitsOf(t *testing.T, dir string, tokens []int) string {
	t.Helper()
	ids := make([]string, len(tokens))
	for i, id := range tokens {
		ids[i] = strconv.Itoa(id)
	}
	code, stdout, stderr := rella(t, "logits", "--model", dir, "--tokens", strings.Join(ids, ","))
	if code != 0 {
		t.Fatalf("logits %s: exit %d: %s", dir, code, stderr)
	}
	return stdout
}

// `rella logits` on the fp16 .bin folders prints exactly (bit for bit: the
// JSON holds float32s' shortest spellings) what it prints on the same
// weights in safetensors.
func TestLogitsBinEqualSafetensorsTwin(t *testing.T) {
	for _, c := range []struct {
		rel    string
		tokens []int
	}{
		{"fixtures/stories260K-bin/fp16-sharded", []int{1, 403, 407, 261, 370, 11}},
		{"fixtures/tiny-vicuna-bin", []int{1, 319, 13563, 1546, 3869, 1939, 29871}},
	} {
		bin := testenv.Shared(t, c.rel)
		twin := twinFolder(t, bin)
		got, want := logitsOf(t, bin, c.tokens), logitsOf(t, twin, c.tokens)
		if got != want {
			t.Errorf("%s: .bin logits differ from the safetensors twin's", c.rel)
		}
		var parsed struct{ Last []float64 }
		if err := json.Unmarshal([]byte(got), &parsed); err != nil || len(parsed.Last) == 0 {
			t.Fatalf("%s: bad logits output %q: %v", c.rel, got, err)
		}
	}
}

// The float32 .bin of stories260K reproduces llama2.c's logits.
func TestLogitsF32BinMatchesLlama2c(t *testing.T) {
	dir := testenv.Shared(t, "fixtures/stories260K-bin/f32-single")
	refPath := testenv.Shared(t, "fixtures/stories260K/reference.json")
	b, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Sequences []struct {
			Tokens     []int     `json:"tokens"`
			LogitsLast []float64 `json:"logits_last"`
		} `json:"sequences"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, s := range ref.Sequences {
		if len(s.Tokens) < 2 || len(s.Tokens) > 64 {
			continue
		}
		var got struct{ Last []float64 }
		if err := json.Unmarshal([]byte(logitsOf(t, dir, s.Tokens)), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Last) != len(s.LogitsLast) {
			t.Fatalf("%d logits, want %d", len(got.Last), len(s.LogitsLast))
		}
		worst := 0.0
		for i := range got.Last {
			worst = math.Max(worst, math.Abs(got.Last[i]-s.LogitsLast[i]))
		}
		if worst > 1e-4 {
			t.Errorf("tokens %v: logits differ from llama2.c's by up to %g", s.Tokens, worst)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no reference sequence checked")
	}
}

// `rella score` on the Vicuna-layout .bin fixture gives the same P(Yes)
// for every test prompt as on its safetensors twin.
func TestScoreBinEqualSafetensorsTwin(t *testing.T) {
	bin := testenv.Shared(t, "fixtures/tiny-vicuna-bin")
	twin := twinFolder(t, bin)
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "c.yaml"), `
seed: 7
output_dir: `+dir+`/out
stages: [prepare, score]
generate: {data: true, data_users: 14, data_items: 40}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3}
model: {batch_size: 8}
`)
	preds := map[string][]map[string]any{}
	for name, m := range map[string]string{"bin": bin, "twin": twin} {
		out := filepath.Join(dir, "out-"+name)
		code, _, stderr := rella(t, "score", "-c", cfg, "model.path="+m, "output_dir="+out)
		if code != 0 {
			t.Fatalf("score on %s: exit %d\n%s", name, code, stderr)
		}
		preds[name] = readPredictions(t, filepath.Join(out, "score", "test-recency", "predictions.jsonl"))
	}
	a, b := preds["bin"], preds["twin"]
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("%d predictions on .bin, %d on the twin", len(a), len(b))
	}
	distinct := map[any]bool{}
	for i := range a {
		if a[i]["p"] != b[i]["p"] {
			t.Errorf("prediction %d: P(Yes) %v on .bin, %v on the twin", i, a[i]["p"], b[i]["p"])
		}
		distinct[a[i]["p"]] = true
	}
	if len(distinct) < 2 {
		t.Errorf("every prompt scored the same P(Yes) %v: the check compares nothing", a[0]["p"])
	}
}

// `rella convert` writes HF-style sharded safetensors whose tensors are the
// .bin's bytes, and the converted folder gives the same logits; it refuses
// a non-empty --out and leaves nothing behind when it fails.
func TestConvertCommand(t *testing.T) {
	bin := testenv.Shared(t, "fixtures/tiny-vicuna-bin")
	out := filepath.Join(t.TempDir(), "converted")
	code, stdout, stderr := rella(t, "convert", "--model", bin, "--out", out, "--max-shard-size", "3MB")
	if code != 0 {
		t.Fatalf("convert: exit %d\n%s", code, stderr)
	}
	if strings.TrimSpace(stdout) != out {
		t.Errorf("stdout %q", stdout)
	}
	var idx struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		} `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	b, err := os.ReadFile(filepath.Join(out, "model.safetensors.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	shards := map[string]bool{}
	for _, f := range idx.WeightMap {
		shards[f] = true
	}
	if len(shards) < 2 || !shards["model-00001-of-00003.safetensors"] || len(idx.WeightMap) != 21 {
		t.Errorf("index maps %d tensors to shards %v", len(idx.WeightMap), shards)
	}
	for _, f := range []string{"config.json", "tokenizer.model", "generation_config.json", "special_tokens_map.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("companion %s not copied: %v", f, err)
		}
	}
	ref, err := safetensors.Open(filepath.Join(bin, "model.fp16.safetensors.ref"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	m, err := model.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != "safetensors" {
		t.Errorf("converted format %q", m.Format)
	}
	var total int64
	for _, n := range ref.Names() {
		dt, _, got, err := m.Raw(n)
		want, _ := ref.Bytes(n)
		if err != nil || dt != safetensors.DTypeF16 || !bytes.Equal(got, want) {
			t.Errorf("converted %s: %s, %v, equal %v", n, dt, err, bytes.Equal(got, want))
		}
		total += int64(len(want))
	}
	m.Close()
	if idx.Metadata.TotalSize != total {
		t.Errorf("total_size %d, want %d", idx.Metadata.TotalSize, total)
	}
	toks := []int{1, 319, 13563, 3869}
	if logitsOf(t, out, toks) != logitsOf(t, bin, toks) {
		t.Error("converted folder's logits differ from the .bin's")
	}

	// A tied checkpoint fits one file; lm_head, a copy of the embeddings, is left out.
	tied := testenv.Shared(t, "fixtures/stories260K-bin/fp16-sharded")
	out2 := filepath.Join(t.TempDir(), "tied")
	if code, _, stderr := rella(t, "convert", "--model", tied, "--out", out2); code != 0 {
		t.Fatalf("convert tied: exit %d\n%s", code, stderr)
	}
	f, err := safetensors.Open(filepath.Join(out2, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Info("lm_head.weight"); ok || len(f.Names()) != 47 {
		t.Errorf("tied conversion holds %d tensors (lm_head present: %v)", len(f.Names()), ok)
	}
	f.Close()

	// Refusals: a non-empty --out, a bad size; a failing conversion leaves no folder.
	if code, _, stderr := rella(t, "convert", "--model", bin, "--out", out); code != 1 || !strings.Contains(stderr, "not empty") {
		t.Errorf("existing --out: exit %d, %q", code, stderr)
	}
	if code, _, stderr := rella(t, "convert", "--model", bin, "--out", out+"2", "--max-shard-size", "lots"); code != 2 || !strings.Contains(stderr, "max-shard-size") {
		t.Errorf("bad size: exit %d, %q", code, stderr)
	}
	parent := t.TempDir()
	if code, _, _ := rella(t, "convert", "--model", filepath.Join(parent, "nowhere"), "--out", filepath.Join(parent, "x")); code != 1 {
		t.Errorf("missing --model: exit %d", code)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("a failed conversion left %v", ents)
	}
}

func TestParseByteSize(t *testing.T) {
	for s, want := range map[string]int64{"5GB": 5e9, "2GiB": 2 << 30, "500MB": 5e8, "10kb": 1e4, "123": 123, "1.5GB": 15e8, "64B": 64} {
		if got, err := parseByteSize(s); err != nil || got != want {
			t.Errorf("%s: %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "GB", "-1GB", "x"} {
		if _, err := parseByteSize(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}
