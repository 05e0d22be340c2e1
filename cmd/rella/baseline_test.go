package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/safetensors"
)

const tinyBaselineConfig = `
seed: 3
output_dir: %DIR%/out
generate: {data: true, data_users: 40, data_items: 60}
data: {dataset: ml-1m, dir: %DIR%/source}
baseline: {embedding_size: 4, hidden: [8], attention_hidden: [4], history_len: 5, retrieval_size: 3, batch_size: 64, epochs: 2}
`

// `rella baseline` writes the score stage's files for the test split (one
// prediction per test sample, with user and item ids; metrics.json with
// provenance), the epoch log and the model; --resume reuses the result;
// another N goes to its own folder.
func TestBaselineCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "b.yaml"), strings.ReplaceAll(tinyBaselineConfig, "%DIR%", dir))
	code, stdout, stderr := rella(t, "baseline", "-c", cfg, "--model", "din")
	if code != 0 {
		t.Fatalf("baseline: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "DIN (ID baseline)") {
		t.Errorf("summary lacks the DIN row:\n%s", stdout)
	}
	out := filepath.Join(dir, "out", "baseline", "test-din")
	var stats map[string]int
	b, err := os.ReadFile(filepath.Join(dir, "out", "data", "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &stats)
	preds := readPredictions(t, filepath.Join(out, "predictions.jsonl"))
	if len(preds) != stats["test"] || stats["test"] == 0 {
		t.Fatalf("%d predictions, want %d (the test split)", len(preds), stats["test"])
	}
	for _, k := range []string{"index", "user", "item", "label", "p"} {
		if _, ok := preds[0][k]; !ok {
			t.Errorf("prediction lacks %q: %v", k, preds[0])
		}
	}
	var rec map[string]any
	b, err = os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	if rec["stage"] != "baseline" || rec["model"] != "din" || rec["n"] != float64(stats["test"]) || rec["fingerprint"] == "" || rec["auc"] == nil {
		t.Errorf("metrics.json: %v", rec)
	}
	logLines := strings.Count(readString(t, filepath.Join(out, "log.jsonl")), "\n")
	if logLines < 1 || logLines > 2 {
		t.Errorf("log.jsonl has %d epochs, want 1 or 2", logLines)
	}
	st, err := safetensors.Open(filepath.Join(out, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Info("emb.item.item_id"); !ok || st.Metadata()["model"] != "din" {
		t.Errorf("model.safetensors: tensors %v, metadata %v", st.Names(), st.Metadata())
	}
	st.Close()

	// --resume: the same settings are not trained again.
	before, _ := os.Stat(filepath.Join(out, "model.safetensors"))
	code, _, stderr = rella(t, "baseline", "-c", cfg, "--model", "din", "--resume")
	if code != 0 {
		t.Fatalf("baseline --resume: exit %d\n%s", code, stderr)
	}
	after, _ := os.Stat(filepath.Join(out, "model.safetensors"))
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("--resume trained again")
	}

	// N-shot goes to test-<model>-n<N>.
	code, _, stderr = rella(t, "baseline", "-c", cfg, "--model", "deepfm", "baseline.train_samples=100")
	if code != 0 {
		t.Fatalf("baseline N-shot: exit %d\n%s", code, stderr)
	}
	b, err = os.ReadFile(filepath.Join(dir, "out", "baseline", "test-deepfm-n100", "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"baseline": "{\"model\":\"deepfm\"`) || !strings.Contains(string(b), `train_samples\":100`) {
		t.Errorf("N-shot metrics.json does not record the settings:\n%s", b)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBaselineUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"baseline", "quickstart", "--model", "xgboost"},
		{"study", "quickstart", "--param", "K", "--values", "1", "--baseline", "sim"},
		{"study", "quickstart", "--param", "N", "--values", "1", "--baseline", "lr"},
	} {
		if code, _, stderr := rella(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)\n%s", args, code, stderr)
		}
	}
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "b.yaml"), "baseline: {embeding_size: 8}\n")
	if code, _, stderr := rella(t, "baseline", "-c", cfg); code == 0 || !strings.Contains(stderr, "b.yaml:1: unknown key baseline.embeding_size (did you mean baseline.embedding_size?)") {
		t.Errorf("misspelt key: exit %d\n%s", code, stderr)
	}
}

// The N study with --baseline sim trains SIM on the same N samples beside
// ReLLa and puts it in the CSV.
func TestStudyNWithBaseline(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "study.yaml"), `
output_dir: `+dir+`/out
generate: {data: true, data_users: 12, data_items: 40, model: true, tokenizer: `+tok+`, hidden: 16, layers: 1, heads: 2, kv_heads: 1, intermediate: 32}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3}
model: {path: `+dir+`/model, batch_size: 8}
lora: {lora_r: 2, lora_alpha: 4}
training: {learning_rate: 1.0e-2, max_steps: 2, batch_size: 8, micro_batch_size: 4}
retrieval: {train_type: original}
baseline: {embedding_size: 4, hidden: [8], attention_hidden: [4], history_len: 5, retrieval_size: 3, batch_size: 32, epochs: 1}
`)
	code, stdout, stderr := rella(t, "study", "-c", cfg, "--param", "N", "--values", "16,32", "--baseline", "sim")
	if code != 0 {
		t.Fatalf("study: exit %d\n%s", code, stderr)
	}
	if n := strings.Count(stdout, "SIM (ID baseline)"); n != 2 {
		t.Errorf("study printed %d SIM rows, want 2:\n%s", n, stdout)
	}
	csv := readString(t, filepath.Join(dir, "out", "study", "auc-vs-N.csv"))
	if n := strings.Count(csv, "SIM (ID baseline)"); n != 2 {
		t.Errorf("auc-vs-N.csv has %d SIM rows, want 2:\n%s", n, csv)
	}
	for _, n := range []string{"16", "32"} {
		p := filepath.Join(dir, "out", "study", "N-"+n, "baseline", "test-sim-n"+n, "metrics.json")
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
}
