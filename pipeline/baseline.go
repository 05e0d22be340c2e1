package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rella-project/rella/baseline"
	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/progress"
)

// LogFile is the per-epoch log of a baseline's training (one JSON object a line).
const LogFile = "log.jsonl"

// Baseline trains the ID-based CTR model baseline.model on the training
// split (baseline.train_samples drawn as the ReiT mix draws, or all), picks
// the epoch on the validation split, and scores split with it. It writes
// OUTPUT_DIR/baseline/<split>-<model>[-n<N>]/: metrics.json (with
// provenance) and predictions.jsonl as `rella score` does, log.jsonl (one
// line per epoch), model.safetensors and vocab.json. With resume, a result
// whose fingerprint matches the current settings is returned untrained.
func (r *Runner) Baseline(ctx context.Context, ds *data.Dataset, split string, resume bool) (Result, error) {
	c := r.Cfg
	bc := c.Baseline
	samples, err := ds.Split(split)
	if err != nil {
		return Result{}, err
	}
	samples = c.Data.Limit(samples)
	v := Variant{Stage: "baseline", Split: split, History: HistoryRecency, Baseline: bc.Model, N: bc.TrainSamples}
	dir := r.path("baseline", v.Dir())
	rec, err := r.baselineRecord(v)
	if err != nil {
		return Result{}, err
	}
	if resume {
		if old, ok := r.upToDate(dir, rec); ok {
			r.Log.Info("baseline: finished with these settings; reused (--resume)", "dir", dir)
			return Result{Variant: v, Dir: dir, K: old.K, Metrics: old.Result, Reused: true}, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, fmt.Errorf("baseline: %w", err)
	}
	// A stale result must not survive a failed run.
	for _, name := range []string{MetricsFile, PredictionsFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			return Result{}, fmt.Errorf("baseline: %w", err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, LogFile))
	if err != nil {
		return Result{}, fmt.Errorf("baseline: %w", err)
	}
	defer logf.Close()
	enc := json.NewEncoder(logf)
	m, err := baseline.Train(ctx, ds, bc, baseline.Options{Seed: c.Seed, SampleSeed: c.Data.SampleSeed, Log: r.Log,
		OnEpoch: func(e baseline.Epoch) error { return enc.Encode(e) }})
	if err != nil {
		return Result{}, err
	}
	defer m.Close()
	if err := m.Save(dir); err != nil {
		return Result{}, err
	}
	p, err := m.Predict(ctx, samples)
	if err != nil {
		return Result{}, err
	}
	res, err := r.writeResults(dir, rec, predictionsOf(ds, samples, 0), p)
	if err != nil {
		return Result{}, err
	}
	r.Log.Info("baseline: done", "model", bc.Model, "split", split, "n", res.N, "auc", progress.Fixed(res.AUC, 4),
		"logloss", progress.Fixed(res.LogLoss, 4), "acc", progress.Fixed(res.Accuracy, 4), "best_epoch", m.BestEpoch, "dir", dir)
	return Result{Variant: v, Dir: dir, K: bc.HistoryLen, Metrics: res}, nil
}

// baselineRecord describes a baseline's result: the data, the split, the
// whole baseline section, the seeds and the sample limit.
func (r *Runner) baselineRecord(v Variant) (*Record, error) {
	c := r.Cfg
	dfp, err := r.dataFingerprint()
	if err != nil {
		return nil, err
	}
	bc, err := json.Marshal(c.Baseline)
	if err != nil {
		return nil, err
	}
	in := map[string]string{
		"stage":                 v.Stage,
		"data":                  dfp,
		"data.dataset":          string(c.Data.Dataset),
		"data.max_eval_samples": strconv.Itoa(c.Data.MaxEvalSamples),
		"data.sample_seed":      strconv.FormatInt(c.Data.SampleSeed, 10),
		"seed":                  strconv.FormatInt(c.Seed, 10),
		"split":                 v.Split,
		"baseline":              string(bc),
	}
	rec := &Record{Variant: v.Name(), Stage: v.Stage, Split: v.Split, History: v.History, K: c.Baseline.HistoryLen,
		Dataset: string(c.Data.Dataset), Model: c.Baseline.Model, DType: "float32", Engine: "cpu", Inputs: in, Fingerprint: hashInputs(in)}
	if c.Baseline.Model == "sim" {
		rec.Retrieval = fmt.Sprintf("SIM search (hard + soft), top %d of the long history", c.Baseline.RetrievalSize)
	}
	return rec, nil
}
