package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/testenv"
)

// rellaLog runs rella like rella() and also returns what it logged.
func rellaLog(t *testing.T, args ...string) (code int, stdout, stderr, log string) {
	t.Helper()
	var out, errb, logb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(&logb, nil))}
	code = runMain(context.Background(), e, args)
	return code, out.String(), errb.String(), logb.String()
}

func readJSONFile(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// tinyConfig writes a config for a tiny generated dataset and model under
// dir (shared by every output folder of the test) with output_dir out.
func tinyConfig(t *testing.T, dir, name, stages string) string {
	tok := testenv.Shared(t, "fixtures/tokenizer/llama")
	return writeFile(t, filepath.Join(dir, name+".yaml"), `
seed: 5
output_dir: `+dir+`/`+name+`
stages: [`+stages+`]
generate: {data: true, data_users: 14, data_items: 40, model: true, tokenizer: `+tok+`, hidden: 16, layers: 1, heads: 2, kv_heads: 1, intermediate: 32}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3}
model: {path: `+dir+`/model, batch_size: 4}
lora: {lora_r: 2, lora_alpha: 4}
training: {learning_rate: 5.0e-2, max_steps: 4, batch_size: 8, micro_batch_size: 4, save_steps: 2}
retrieval: {enabled: true, dim: 4, train_type: mixed, train_samples: 16, batch_size: 8}
`)
}

// issue 11 item 2: `rella run --resume` after data.history_len changes
// recomputes the scores (saying so) and shows what a fresh run with the new
// K shows, not the old K's numbers; an unchanged rerun reuses them.
func TestResumeRecomputesStaleScores(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyConfig(t, dir, "out", "prepare, score")
	code, k3, stderr, _ := rellaLog(t, "run", cfg)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, stderr)
	}
	code, resumed, stderr, log := rellaLog(t, "run", cfg, "--resume", "data.history_len=2")
	if code != 0 {
		t.Fatalf("run --resume K=2: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(log, "recomputing") || !strings.Contains(log, "data.history_len") {
		t.Errorf("the log does not say the K=3 results were recomputed for data.history_len:\n%s", log)
	}
	fresh := tinyConfig(t, dir, "fresh", "prepare, score")
	code, k2, stderr, _ := rellaLog(t, "run", fresh, "data.history_len=2")
	if code != 0 {
		t.Fatalf("fresh run K=2: exit %d\n%s", code, stderr)
	}
	if resumed != k2 {
		t.Errorf("resumed run with K=2 shows\n%s\nbut a fresh K=2 run shows\n%s", resumed, k2)
	}
	if resumed == k3 {
		t.Errorf("resumed run with K=2 shows the K=3 numbers:\n%s", resumed)
	}
	if m := readJSONFile(t, filepath.Join(dir, "out", "score", "test-recency", "metrics.json")); m["k"] != 2.0 {
		t.Errorf("metrics.json after the K=2 resume records k=%v", m["k"])
	}
	code, again, _, log := rellaLog(t, "run", cfg, "--resume", "data.history_len=2")
	if code != 0 || again != resumed || !strings.Contains(log, "reused") || strings.Contains(log, "recomputing") {
		t.Errorf("unchanged resume: exit %d, summary\n%s\nlog\n%s", code, again, log)
	}
}

// issue 11 items 2, 3 and 10: scoring with an adapter or another split
// into the run's folder keeps the zero-shot test results (files and the
// summary's zero-shot rows); every metrics.json says what made it; the
// predictions join back to the samples; the summary is also written as
// summary.md and summary.json, with the fine-tuned rows' history selection;
// everything written is 0644 (folders 0755).
func TestResultsPerVariant(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	cfg := tinyConfig(t, dir, "out", "prepare, embed, retrieve, score, train")
	out := filepath.Join(dir, "out")
	code, first, stderr, _ := rellaLog(t, "run", cfg)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, stderr)
	}
	zeroPath := filepath.Join(out, "score", "test-recency", "metrics.json")
	zero, err := os.ReadFile(zeroPath)
	if err != nil {
		t.Fatal(err)
	}

	// Scoring with the trained adapter, and scoring the validation split,
	// into the same folder.
	if code, _, stderr := rella(t, "score", "-c", cfg, "model.adapter="+filepath.Join(out, "adapter")); code != 0 {
		t.Fatalf("score with adapter: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := rella(t, "score", "-c", cfg, "--split", "valid"); code != 0 {
		t.Fatalf("score --split valid: exit %d\n%s", code, stderr)
	}
	if b, _ := os.ReadFile(zeroPath); !bytes.Equal(b, zero) {
		t.Errorf("scoring with an adapter or another split changed %s", zeroPath)
	}
	code, resumed, stderr, _ := rellaLog(t, "run", cfg, "--resume")
	if code != 0 {
		t.Fatalf("run --resume: exit %d\n%s", code, stderr)
	}
	if resumed != first {
		t.Errorf("after scoring with the adapter, the resumed summary is\n%s\nnot\n%s", resumed, first)
	}

	// The adapter's results: their own folder, the adapter named, the same
	// predictions as the fine-tuned evaluation of the run.
	ad := readJSONFile(t, filepath.Join(out, "score", "test-recency-out-adapter", "metrics.json"))
	if ad["adapter"] != filepath.Join(out, "adapter") || ad["split"] != "test" {
		t.Errorf("adapter metrics.json: %v", ad)
	}
	tuned := readPredictions(t, filepath.Join(out, "train", "test-recency", "predictions.jsonl"))
	withAdapter := readPredictions(t, filepath.Join(out, "score", "test-recency-out-adapter", "predictions.jsonl"))
	for i := range tuned {
		if d := tuned[i]["p"].(float64) - withAdapter[i]["p"].(float64); d > 1e-6 || d < -1e-6 {
			t.Fatalf("sample %d: p %v scored with the adapter, %v in the run's fine-tuned evaluation", i, withAdapter[i]["p"], tuned[i]["p"])
		}
	}

	// What made each result.
	for _, c := range []struct{ path, split, history, adapter string }{
		{"score/test-recency", "test", "recency", ""},
		{"score/test-subr", "test", "subr", ""},
		{"score/valid-recency", "valid", "recency", ""},
		{"train/test-subr", "test", "subr", filepath.Join(out, "adapter")},
	} {
		m := readJSONFile(t, filepath.Join(out, c.path, "metrics.json"))
		if m["split"] != c.split || m["history"] != c.history || m["adapter"] != c.adapter || m["k"] != 3.0 ||
			m["model"] != filepath.Join(dir, "model") || m["dtype"] != "float32" || m["engine"] != "cpu" ||
			m["time"] == "" || m["fingerprint"] == "" || m["n"] == 0.0 || m["auc"] == nil {
			t.Errorf("%s/metrics.json: %v", c.path, m)
		}
		if _, ok := m["inputs"].(map[string]any)["data"]; !ok {
			t.Errorf("%s/metrics.json: inputs lack the data fingerprint", c.path)
		}
		if (c.history == "subr") != (m["retrieval"] != nil) {
			t.Errorf("%s/metrics.json: retrieval %v", c.path, m["retrieval"])
		}
	}

	// Predictions name their sample's user and target item.
	opts := data.DefaultOptions()
	opts.Dir, opts.HistoryLen = filepath.Join(dir, "source"), 3
	ds, _, err := data.Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, split := range []string{"test", "valid"} {
		samples, _ := ds.Split(split)
		preds := readPredictions(t, filepath.Join(out, "score", split+"-recency", "predictions.jsonl"))
		if len(preds) != len(samples) {
			t.Fatalf("%s: %d predictions for %d samples", split, len(preds), len(samples))
		}
		for i, s := range samples {
			p := preds[i]
			if p["index"] != float64(i) || p["user"] != ds.Users[s.User].ID || p["item"] != ds.Items[ds.Target(s).Item].ID || p["label"] != float64(s.Label) {
				t.Fatalf("%s prediction %d: %v; sample user %s item %s label %d", split, i, p, ds.Users[s.User].ID, ds.Items[ds.Target(s).Item].ID, s.Label)
			}
		}
	}

	// The summary files.
	md, err := os.ReadFile(filepath.Join(out, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"| zero-shot (recency top-K) | test |", "| zero-shot + SUBR |", "| fine-tuned (LoRA, recency top-K) |", "| fine-tuned (LoRA, SUBR) |", "`train/test-subr`"} {
		if !strings.Contains(string(md), w) {
			t.Errorf("summary.md lacks %q:\n%s", w, md)
		}
	}
	sum := readJSONFile(t, filepath.Join(out, "summary.json"))
	rows, _ := sum["rows"].([]any)
	if len(rows) != 4 {
		t.Fatalf("summary.json: %d rows, want 4: %v", len(rows), sum)
	}
	if r := rows[3].(map[string]any); r["history"] != "subr" || r["stage"] != "train" || r["metrics"].(map[string]any)["auc"] == nil {
		t.Errorf("summary.json row 3: %v", r)
	}

	// Modes.
	filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		st, _ := d.Info()
		want := fs.FileMode(0o644)
		if d.IsDir() {
			want = 0o755
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), want)
		}
		return nil
	})
}

// issue 11 item 5: a single-class evaluation writes null for the AUC,
// keeps log loss and accuracy, warns once and exits 0.
func TestSingleClassEvaluation(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyConfig(t, dir, "out", "prepare, score, train")
	code, stdout, stderr, log := rellaLog(t, "run", cfg, "data.max_eval_samples=1", "training.eval_steps=2")
	if code != 0 {
		t.Fatalf("run with one evaluation sample: exit %d\n%s", code, stderr)
	}
	if n := strings.Count(log, "AUC is undefined"); n != 1 {
		t.Errorf("warned %d times about the undefined AUC, want once:\n%s", n, log)
	}
	if !strings.Contains(stdout, "n/a") {
		t.Errorf("summary does not show the undefined AUC as n/a:\n%s", stdout)
	}
	for _, v := range []string{"score/test-recency", "score/test-subr", "train/test-recency", "train/test-subr"} {
		m := readJSONFile(t, filepath.Join(dir, "out", v, "metrics.json"))
		if a, ok := m["auc"]; !ok || a != nil || m["n"] != 1.0 {
			t.Errorf("%s metrics.json: auc %v (present %v), n %v", v, a, ok, m["n"])
		}
		if _, ok := m["logloss"].(float64); !ok {
			t.Errorf("%s metrics.json lost the log loss: %v", v, m)
		}
		if a, ok := m["acc"].(float64); !ok || (a != 0 && a != 1) {
			t.Errorf("%s metrics.json accuracy of one sample: %v", v, m["acc"])
		}
	}
	// The trainer's evaluations of the single validation sample: valid
	// JSON lines with a null AUC.
	lj, err := os.ReadFile(filepath.Join(dir, "out", "train", "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	evals := 0
	for _, line := range strings.Split(strings.TrimSpace(string(lj)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log.jsonl line %q: %v", line, err)
		}
		if a, ok := rec["auc"]; ok {
			evals++
			if a != nil {
				t.Errorf("log.jsonl evaluation of one sample has auc %v, want null", a)
			}
		}
	}
	if evals == 0 {
		t.Error("log.jsonl holds no evaluation")
	}
	sum := readJSONFile(t, filepath.Join(dir, "out", "summary.json"))
	if r := sum["rows"].([]any)[0].(map[string]any)["metrics"].(map[string]any); r["auc"] != nil {
		t.Errorf("summary.json auc: %v", r["auc"])
	}
}
