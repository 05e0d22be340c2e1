package pipeline

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rella-project/rella/baseline"
	"github.com/rella-project/rella/metrics"
)

// History selections a prompt can use.
const (
	HistoryRecency = "recency" // the K most recent ratings
	HistorySUBR    = "subr"    // the K most similar ratings (SUBR)
)

// Variant is one evaluation: a split's prompts, with recency or SUBR
// histories, scored by the base model, by the base model with an adapter
// (model.adapter), or by the adapter the train stage made.
type Variant struct {
	Stage     string // "score" or "train"
	Split     string // train | valid | test
	History   string // HistoryRecency or HistorySUBR
	Adapter   string // model.adapter for the score stage; "" for the base model
	FineTuned bool   // the train stage's own adapter
	Baseline  string // an ID baseline's model (Stage "baseline"): deepfm, dcnv2, din, sim, sasrec
	N         int    // the baseline's drawn training samples (baseline.train_samples; 0 = all)
}

// Dir is the variant's folder name: <split>-<history>, followed for an
// adapter given by model.adapter by -<tag> (the adapter folder's parent and
// base names, e.g. test-subr-quickstart-adapter).
func (v Variant) Dir() string {
	if v.Baseline != "" {
		d := v.Split + "-" + v.Baseline
		if v.N > 0 {
			d += "-n" + strconv.Itoa(v.N)
		}
		return d
	}
	d := v.Split + "-" + v.History
	if v.Adapter != "" && !v.FineTuned {
		d += "-" + AdapterTag(v.Adapter)
	}
	return d
}

// Name is the variant as the summary table shows it.
func (v Variant) Name() string {
	if v.Baseline != "" {
		if v.N > 0 {
			return fmt.Sprintf("%s (ID baseline, N=%d)", baseline.DisplayName(v.Baseline), v.N)
		}
		return baseline.DisplayName(v.Baseline) + " (ID baseline)"
	}
	h := "recency top-K"
	if v.History == HistorySUBR {
		h = "SUBR"
	}
	switch {
	case v.FineTuned:
		return "fine-tuned (LoRA, " + h + ")"
	case v.Adapter != "":
		return "adapter " + AdapterTag(v.Adapter) + " (" + h + ")"
	case v.History == HistorySUBR:
		return "zero-shot + SUBR"
	}
	return "zero-shot (recency top-K)"
}

var unsafeTag = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// AdapterTag names an adapter folder in a variant's folder name: the
// folder's parent and base names (runs/x/adapter -> x-adapter), with
// anything but letters, digits, '.', '_' and '-' replaced by '_'.
func AdapterTag(dir string) string {
	clean := filepath.Clean(dir)
	if abs, err := filepath.Abs(clean); err == nil {
		clean = abs
	}
	base, parent := filepath.Base(clean), filepath.Base(filepath.Dir(clean))
	tag := base
	if parent != "." && parent != string(filepath.Separator) {
		tag = parent + "-" + base
	}
	return strings.Trim(unsafeTag.ReplaceAllString(tag, "_"), "_")
}

// Record is what metrics.json holds: the metrics (auc, logloss, acc, n at
// the top level; a metric that is not a number, such as the AUC of a split
// with one class, is null) and what produced them. Inputs are the settings
// that define the result, by name; Fingerprint is their hash, and a resumed
// run reuses the result only when it matches.
type Record struct {
	Result      metrics.Result    `json:"-"`
	Variant     string            `json:"variant"` // the summary's row name
	Stage       string            `json:"stage"`   // score | train | baseline
	Split       string            `json:"split"`
	History     string            `json:"history"` // recency | subr
	K           int               `json:"k"`       // data.history_len
	Dataset     string            `json:"dataset"`
	Model       string            `json:"model"`   // model.path
	Adapter     string            `json:"adapter"` // adapter folder; "" = the base model
	Retrieval   string            `json:"retrieval,omitempty"`
	DType       string            `json:"dtype"`
	Engine      string            `json:"engine"` // cpu | gpu
	Commit      string            `json:"commit,omitempty"`
	Time        string            `json:"time"` // RFC 3339, UTC
	Fingerprint string            `json:"fingerprint"`
	Inputs      map[string]string `json:"inputs"`
}

type plainRecord Record // Record without its methods

// MarshalJSON writes the metrics first, then the provenance.
func (r Record) MarshalJSON() ([]byte, error) {
	m, err := json.Marshal(r.Result)
	if err != nil {
		return nil, err
	}
	p, err := json.Marshal(plainRecord(r))
	if err != nil {
		return nil, err
	}
	// {"auc":..,"n":..} + {"variant":..} -> {"auc":..,"n":..,"variant":..}
	return append(append(m[:len(m)-1:len(m)-1], ','), p[1:]...), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var p plainRecord
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &p.Result); err != nil {
		return err
	}
	*r = Record(p)
	return nil
}

// hashInputs is the fingerprint of a result's defining settings.
func hashInputs(in map[string]string) string {
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	var n [8]byte
	for _, k := range keys {
		for _, s := range []string{k, in[k]} {
			binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
			h.Write(n[:])
			h.Write([]byte(s))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diffInputs names the settings that differ between two results.
func diffInputs(old, cur map[string]string) []string {
	var d []string
	for k, v := range cur {
		if o, ok := old[k]; !ok || o != v {
			d = append(d, k)
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			d = append(d, k)
		}
	}
	sort.Strings(d)
	return d
}

// buildCommit returns the VCS revision the binary was built from ("" when
// unknown, as under `go run`), with "+dirty" for a modified tree.
func buildCommit() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return rev + dirty
}

// MetricsFile and PredictionsFile are the files of a variant's folder.
const (
	MetricsFile     = "metrics.json"
	PredictionsFile = "predictions.jsonl"
	// partialFile holds the predictions of an interrupted pass; a rerun
	// with the same fingerprint continues from it.
	partialFile = "predictions.partial.jsonl"
)

// ReadRecord reads dir/metrics.json.
func ReadRecord(dir string) (*Record, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	if err != nil {
		return nil, err
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, MetricsFile), err)
	}
	return &rec, nil
}

// upToDate reports whether dir holds a finished result with fingerprint
// want. When it holds another one, it logs which settings differ.
func (r *Runner) upToDate(dir string, want *Record) (*Record, bool) {
	old, err := ReadRecord(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		r.Log.Warn("results unreadable; recomputing", "dir", dir, "err", err)
		return nil, false
	}
	if old.Fingerprint != want.Fingerprint {
		diff := diffInputs(old.Inputs, want.Inputs)
		if len(old.Inputs) == 0 {
			diff = []string{"(results written before fingerprints)"}
		}
		r.Log.Info("results were made with other settings; recomputing", "dir", dir, "differs", strings.Join(diff, ","))
		return nil, false
	}
	if _, err := os.Stat(filepath.Join(dir, PredictionsFile)); err != nil {
		r.Log.Info("predictions missing; recomputing", "dir", dir)
		return nil, false
	}
	return old, true
}

// stamp fills the time and commit of a record about to be written.
func stamp(rec *Record) {
	rec.Time = time.Now().UTC().Format(time.RFC3339)
	rec.Commit = buildCommit()
}

// fmtMetric renders a metric for people: 4 decimals, "n/a" when undefined.
func fmtMetric(v float64, width int) string {
	s := fmt.Sprintf("%.4f", v)
	if v != v || v > 1e308 || v < -1e308 {
		s = "n/a"
	}
	return fmt.Sprintf("%*s", width, s)
}
