package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/atomicfile"
	"github.com/rella-project/rella/metrics"
)

// fingerprints of the inputs every stage shares, computed once per Runner.
type fingerprints struct {
	data, model, tokenizer string
}

// dataFingerprint identifies the prepared samples (set by Prepare).
func (r *Runner) dataFingerprint() (string, error) {
	if r.fp.data == "" {
		fp, err := data.Fingerprint(r.Cfg.Data)
		if err != nil {
			return "", err
		}
		r.fp.data = fp
	}
	return r.fp.data, nil
}

func (r *Runner) modelFingerprint() (string, error) {
	if r.fp.model == "" {
		if err := r.generateModel(); err != nil {
			return "", err
		}
		fp, err := modelFingerprint(r.Cfg.Model.Path)
		if err != nil {
			return "", err
		}
		r.fp.model = fp
	}
	return r.fp.model, nil
}

// tokenizerFingerprint hashes the tokenizer file, or the tokenizer files of
// the folder model.tokenizer (or model.path) names.
func (r *Runner) tokenizerFingerprint() (string, error) {
	if r.fp.tokenizer != "" {
		return r.fp.tokenizer, nil
	}
	p := r.Cfg.Model.Tokenizer
	if p == "" {
		p = r.Cfg.Model.Path
	}
	h := sha256.New()
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("model.tokenizer: %w", err)
	}
	files := []string{p}
	if st.IsDir() {
		files = nil
		for _, n := range []string{"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} {
			if _, err := os.Stat(filepath.Join(p, n)); err == nil {
				files = append(files, filepath.Join(p, n))
			}
		}
	}
	for _, f := range files {
		if err := hashFileSample(h, f); err != nil {
			return "", fmt.Errorf("tokenizer fingerprint: %w", err)
		}
	}
	r.fp.tokenizer = hex.EncodeToString(h.Sum(nil))
	return r.fp.tokenizer, nil
}

// adapterFingerprint identifies a PEFT adapter folder by its files.
func adapterFingerprint(dir string) (string, error) {
	h := sha256.New()
	names, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	n := 0
	for _, p := range names {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			continue
		}
		if err := hashFileSample(h, p); err != nil {
			return "", fmt.Errorf("adapter fingerprint: %w", err)
		}
		n++
	}
	if n == 0 {
		return "", fmt.Errorf("adapter %s: no files", dir)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// newRecord describes the result of scoring v: the settings that define it
// (data, prompt settings, K, split, sample limit, model, tokenizer, adapter,
// history selection and retrieval, dtype, device) and its fingerprint.
// adapterFP is the adapter's fingerprint ("" for none), vecFP the SUBR item
// vectors' ("" for recency); extra adds stage-specific inputs.
func (r *Runner) newRecord(v Variant, adapter, adapterFP, vecFP string, extra map[string]string) (*Record, error) {
	c := r.Cfg
	dfp, err := r.dataFingerprint()
	if err != nil {
		return nil, err
	}
	mfp, err := r.modelFingerprint()
	if err != nil {
		return nil, err
	}
	tfp, err := r.tokenizerFingerprint()
	if err != nil {
		return nil, err
	}
	in := map[string]string{
		"stage":                 v.Stage,
		"data":                  dfp,
		"data.dataset":          string(c.Data.Dataset),
		"data.history_len":      strconv.Itoa(c.Data.HistoryLen),
		"data.max_eval_samples": strconv.Itoa(c.Data.MaxEvalSamples),
		"split":                 v.Split,
		"history":               v.History,
		"prompt":                fmt.Sprintf("%#v", c.Prompt),
		"model":                 mfp,
		"tokenizer":             tfp,
		"model.dtype":           c.Model.DType,
		"model.device":          c.Model.Device,
	}
	if adapterFP != "" {
		in["adapter"] = adapterFP
	}
	if q := r.quantize(); q != "" {
		in["model.quantize"] = q
	}
	rec := &Record{Variant: v.Name(), Stage: v.Stage, Split: v.Split, History: v.History, K: c.Data.HistoryLen,
		Dataset: string(c.Data.Dataset), Model: c.Model.Path, Adapter: adapter, DType: c.Model.DType, Engine: c.Model.Device}
	if v.History == HistorySUBR {
		in["retrieval"] = vecFP
		rec.Retrieval = fmt.Sprintf("SUBR %s, dim %d", c.Retrieval.Similarity, c.Retrieval.Dim)
	}
	for k, val := range extra {
		in[k] = val
	}
	rec.Inputs = in
	rec.Fingerprint = hashInputs(in)
	return rec, nil
}

// Prediction is one scored sample, as predictions.jsonl holds it: its index
// in the scored split, the user and item ids of its target, the label and
// P(Yes).
type Prediction struct {
	Index int     `json:"index"`
	User  string  `json:"user"`
	Item  string  `json:"item"`
	Label int     `json:"label"`
	P     float64 `json:"p"`
}

// partialHeader opens predictions.partial.jsonl.
type partialHeader struct {
	Fingerprint string `json:"partial_of"`
	BatchSize   int    `json:"batch_size"`
	N           int    `json:"n"`
	Offset      int    `json:"offset,omitempty"` // a shard's first sample in the split
}

// readPartial returns the predictions an interrupted pass with the same
// fingerprint, batch size and sample count left in path (index -> p).
func readPartial(path string, h partialHeader) map[int]float64 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	if !sc.Scan() {
		return nil
	}
	var got partialHeader
	if json.Unmarshal(sc.Bytes(), &got) != nil || got != h {
		return nil
	}
	known := map[int]float64{}
	for sc.Scan() {
		var p Prediction
		if json.Unmarshal(sc.Bytes(), &p) != nil || p.Index-h.Offset < 0 || p.Index-h.Offset >= h.N {
			break // a line cut short by the interruption ends what is known
		}
		known[p.Index-h.Offset] = p.P
	}
	return known
}

// partialWriter appends each finished batch to predictions.partial.jsonl.
type partialWriter struct {
	f       *os.File
	samples []Prediction // index, ids and label of every sample; P filled as scored
}

func newPartialWriter(path string, h partialHeader, known map[int]float64, base []Prediction) (*partialWriter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// Rewrite the file with the header and what is kept, then append.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.Encode(h)
	idx := make([]int, 0, len(known))
	for i := range known {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		p := base[i]
		p.P = known[i]
		if err := enc.Encode(p); err != nil {
			return nil, err
		}
	}
	if err := atomicfile.WriteFile(path, buf.Bytes()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &partialWriter{f: f, samples: base}, nil
}

func (w *partialWriter) save(idx []int, p []float64) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for k, i := range idx {
		q := w.samples[i]
		q.P = p[k]
		if err := enc.Encode(q); err != nil {
			return err
		}
	}
	_, err := w.f.Write(buf.Bytes())
	return err
}

func (w *partialWriter) close() error {
	w.f.Sync()
	return w.f.Close()
}

// evaluate scores seqs (the prompts of samples) into dir: the finished
// predictions.jsonl and metrics.json (rec completed with the metrics), or,
// when ctx is cancelled, predictions.partial.jsonl with every finished
// batch, from which the next call with the same fingerprint continues.
func (r *Runner) evaluate(ctx context.Context, sc *Scorer, dir string, rec *Record, ds *data.Dataset, samples []data.Sample, seqs [][]int) (metrics.Result, error) {
	return r.evaluateFrom(ctx, sc, dir, rec, ds, samples, seqs, 0)
}

// evaluateFrom is evaluate for a slice of a split that starts at sample
// offset (a shard): predictions.jsonl numbers its samples offset, offset+1...
// as the unsharded run does.
func (r *Runner) evaluateFrom(ctx context.Context, sc *Scorer, dir string, rec *Record, ds *data.Dataset, samples []data.Sample, seqs [][]int, offset int) (metrics.Result, error) {
	base := predictionsOf(ds, samples, offset)
	ppath := filepath.Join(dir, partialFile)
	h := partialHeader{Fingerprint: rec.Fingerprint, BatchSize: max(sc.BatchSize, 1), N: len(samples), Offset: offset}
	known := readPartial(ppath, h)
	if len(known) > 0 {
		r.Log.Info("continuing an interrupted pass", "dir", dir, "done", len(known), "of", len(samples))
	}
	pw, err := newPartialWriter(ppath, h, known, base)
	if err != nil {
		return metrics.Result{}, fmt.Errorf("%s: %w", dir, err)
	}
	p, err := sc.pYes(ctx, seqs, rec.Variant, known, pw.save)
	if cerr := pw.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return metrics.Result{}, fmt.Errorf("%s interrupted; its finished predictions are kept in %s and the same command continues from them: %w", rec.Variant, ppath, err)
		}
		return metrics.Result{}, err
	}
	res, err := r.writeResults(dir, rec, base, p)
	if err != nil {
		return metrics.Result{}, err
	}
	if err := os.Remove(ppath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return metrics.Result{}, err
	}
	return res, nil
}

// predictionsOf returns the prediction records of samples (P not yet set),
// numbered from offset.
func predictionsOf(ds *data.Dataset, samples []data.Sample, offset int) []Prediction {
	preds := make([]Prediction, len(samples))
	for i, s := range samples {
		preds[i] = Prediction{Index: offset + i, User: ds.Users[s.User].ID, Item: ds.Items[ds.Target(s).Item].ID, Label: int(s.Label)}
	}
	return preds
}

// writeResults writes dir/predictions.jsonl (preds with P from p) and
// dir/metrics.json (rec completed with the metrics of the labels and p, and
// stamped), as every stage that scores does; an undefined AUC (one label
// only) is warned about once per Runner.
func (r *Runner) writeResults(dir string, rec *Record, preds []Prediction, p []float64) (metrics.Result, error) {
	labels := make([]int, len(preds))
	err := atomicfile.Write(filepath.Join(dir, PredictionsFile), func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		for i, q := range preds {
			q.P = p[i]
			labels[i] = q.Label
			if err := enc.Encode(q); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
	if err != nil {
		return metrics.Result{}, err
	}
	res := metrics.Compute(labels, p)
	if !res.Defined() && !r.warnedAUC {
		r.warnedAUC = true
		r.Log.Warn("AUC is undefined: the scored samples all have one label; metrics.json holds null for it (log loss and accuracy are kept)",
			"dir", dir, "n", res.N, "hint", "score more samples (data.max_eval_samples)")
	}
	rec.Result = res
	stamp(rec)
	if err := writeJSON(filepath.Join(dir, MetricsFile), rec); err != nil {
		return metrics.Result{}, err
	}
	return res, nil
}
