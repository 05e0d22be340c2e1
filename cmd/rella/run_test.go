package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/safetensors"
)

func readPredictions(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	return out
}

// A whole ReLLa run on a tiny generated dataset and model: every stage
// writes its outputs, a --resume rerun changes nothing, and `rella score`
// with the saved PEFT adapter reproduces the tuned predictions.
func TestRunEndToEndTiny(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "tiny.yaml"), `
seed: 7
output_dir: `+dir+`/out
stages: [prepare, embed, retrieve, score, train]
generate: {data: true, data_users: 14, data_items: 40, model: true, tokenizer: `+tok+`, hidden: 16, layers: 1, heads: 2, kv_heads: 1, intermediate: 32}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3}
model: {path: `+dir+`/model, batch_size: 8}
lora: {lora_r: 2, lora_alpha: 4}
training: {learning_rate: 1.0e-2, max_steps: 3, batch_size: 8, micro_batch_size: 4, save_steps: 1}
retrieval: {enabled: true, dim: 4, train_type: mixed, train_samples: 12, batch_size: 8}
`)
	code, stdout, stderr, log := rellaLog(t, "run", cfg)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, stderr)
	}
	for _, w := range []string{"zero-shot (recency top-K)", "zero-shot + SUBR", "fine-tuned (LoRA, recency top-K)", "fine-tuned (LoRA, SUBR)"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("summary lacks %q:\n%s", w, stdout)
		}
	}
	// the run opens an engine per stage; the GEMM in use is said once
	if n := strings.Count(log, "cpu engine: GEMM"); n != 1 {
		t.Errorf("the log names the GEMM %d times, want once:\n%s", n, log)
	}
	out := filepath.Join(dir, "out")
	var stats map[string]int
	b, _ := os.ReadFile(filepath.Join(out, "data", "stats.json"))
	json.Unmarshal(b, &stats)
	if stats["test"] == 0 || stats["items"] == 0 {
		t.Fatalf("stats.json: %v", stats)
	}
	emb, err := safetensors.Open(filepath.Join(out, "subr", "item_embeddings.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if info, ok := emb.Info("embeddings"); !ok || info.Shape[0] != stats["items"] || info.Shape[1] != 16 {
		t.Errorf("embeddings: got %v, want [%d 16]", info.Shape, stats["items"])
	}
	emb.Close()
	for _, split := range []string{"train", "valid", "test"} {
		if _, err := os.Stat(filepath.Join(out, "subr", "selection_"+split+"_k3.safetensors")); err != nil {
			t.Errorf("selection for %s: %v", split, err)
		}
	}
	zero := readPredictions(t, filepath.Join(out, "score", "test-recency", "predictions.jsonl"))
	tuned := readPredictions(t, filepath.Join(out, "train", "test-subr", "predictions.jsonl"))
	if len(zero) != stats["test"] || len(tuned) != stats["test"] {
		t.Fatalf("predictions: %d zero-shot and %d tuned, want %d each", len(zero), len(tuned), stats["test"])
	}
	for _, f := range []string{"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "train/test-subr/metrics.json", "train/test-recency/metrics.json", "train/log.jsonl", "score/test-subr/metrics.json", "summary.md", "summary.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}

	// SUBR prompts: one per test sample, and not all equal to the recency ones.
	_, recent, _ := rella(t, "prompts", "-c", cfg, "--split", "test")
	code, subr, stderr := rella(t, "prompts", "-c", cfg, "--split", "test", "--retrieval")
	if code != 0 {
		t.Fatalf("prompts --retrieval: exit %d\n%s", code, stderr)
	}
	if strings.Count(subr, "\n") != stats["test"] || subr == recent {
		t.Errorf("prompts --retrieval: %d lines (want %d), identical to recency: %v", strings.Count(subr, "\n"), stats["test"], subr == recent)
	}

	// Rerunning with --resume redoes nothing and reports the same numbers.
	code, stdout2, stderr := rella(t, "run", cfg, "--resume")
	if code != 0 {
		t.Fatalf("run --resume: exit %d\n%s", code, stderr)
	}
	if stdout2 != stdout {
		t.Errorf("resumed summary differs:\n%s\nwant\n%s", stdout2, stdout)
	}

	// Scoring with the saved PEFT adapter and SUBR histories reproduces the
	// tuned test predictions (the same prompts, the same adapter).
	code, _, stderr = rella(t, "score", "-c", cfg, "model.adapter="+filepath.Join(out, "adapter"), "output_dir="+filepath.Join(dir, "rescored"))
	if code != 0 {
		t.Fatalf("score with adapter: exit %d\n%s", code, stderr)
	}
	again := readPredictions(t, filepath.Join(dir, "rescored", "score", "test-subr-out-adapter", "predictions.jsonl"))
	zeroSUBR := readPredictions(t, filepath.Join(out, "score", "test-subr", "predictions.jsonl"))
	changed := 0
	for i := range tuned {
		if tuned[i]["p"] != zeroSUBR[i]["p"] {
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("training left every test prediction unchanged: the adapter comparison below would prove nothing")
	}
	for i := range tuned {
		if d := again[i]["p"].(float64) - tuned[i]["p"].(float64); d > 1e-6 || d < -1e-6 {
			t.Fatalf("sample %d: p %v with the loaded adapter, %v after training", i, again[i]["p"], tuned[i]["p"])
		}
	}
}

// The K study writes a table with one row per (K, variant) and a plot; the
// runs share one set of item embeddings.
func TestStudyK(t *testing.T) {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "study.yaml"), `
output_dir: `+dir+`/out
generate: {data: true, data_users: 10, data_items: 50, model: true, tokenizer: `+tok+`, hidden: 16, layers: 1, heads: 2, kv_heads: 1, intermediate: 32}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3}
model: {path: `+dir+`/model}
retrieval: {enabled: true, dim: 4}
`)
	code, stdout, stderr := rella(t, "study", "-c", cfg, "--param", "K", "--values", "2,4")
	if code != 0 {
		t.Fatalf("study: exit %d\n%s", code, stderr)
	}
	if n := strings.Count(stdout, "\n"); n != 4 {
		t.Errorf("study printed %d rows, want 4 (2 values x recency/SUBR):\n%s", n, stdout)
	}
	csv, err := os.ReadFile(filepath.Join(dir, "out", "study", "auc-vs-K.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(csv), "\n"); lines != 5 {
		t.Errorf("auc-vs-K.csv has %d lines, want a header and 4 rows:\n%s", lines, csv)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "study", "auc-vs-K.png")); err != nil {
		t.Error(err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "out", "study", "*", "subr")); len(m) != 0 {
		t.Errorf("runs of the study made their own embeddings: %v", m)
	}
}
