package pipeline

import (
	"context"
	"fmt"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/progress"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/prompt"
	"github.com/rella-project/rella/shard"
	"github.com/rella-project/rella/tokenizer"
)

// encodePrompts renders each sample's prompt with the histories sel picks,
// wraps it in the Vicuna template and encodes it with BOS first.
func (r *Runner) encodePrompts(ds *data.Dataset, samples []data.Sample, sel prompt.Selector, enc Encoder) ([][]int, error) {
	b, err := prompt.New(ds.Kind, r.Cfg.Prompt)
	if err != nil {
		return nil, err
	}
	k := r.Cfg.Data.HistoryLen
	seqs := make([][]int, len(samples))
	var hist []int32
	for i, s := range samples {
		hist = sel.Select(s, k, hist[:0])
		seqs[i] = enc.Encode(prompt.Vicuna(b.Prompt(ds, s, hist)), true)
	}
	return seqs, nil
}

// Result is one evaluated variant: where its files are and its metrics.
type Result struct {
	Variant Variant
	Dir     string // folder holding metrics.json and predictions.jsonl
	K       int
	Metrics metrics.Result
	Reused  bool // a resumed run found it up to date
}

// Name is the variant's row name.
func (r Result) Name() string { return r.Variant.Name() }

// Score scores split with recency histories into
// OUTPUT_DIR/score/<split>-recency and, when retrieval.enabled, with SUBR
// histories into OUTPUT_DIR/score/<split>-subr; with model.adapter the
// folder names end in the adapter's tag (see Variant.Dir). With reuse, a
// variant whose metrics.json has the fingerprint of the current settings is
// not scored again. An interrupted pass continues from its finished batches.
//
// With r.Shard set, only that contiguous slice of the samples is scored,
// into <variant folder>/shards/IIIII-of-NNNNN/ (predictions.jsonl numbered as
// in the whole split, the shard's own metrics.json, and shard.json, written
// last, which marks it finished); a shard already finished with the same
// fingerprint is skipped. MergeScores puts the shards together.
func (r *Runner) Score(ctx context.Context, ds *data.Dataset, split string, reuse bool) ([]Result, error) {
	c := r.Cfg
	samples, jobs, err := r.scoreJobs(ctx, ds, split)
	if err != nil {
		return nil, err
	}
	lo, hi := 0, len(samples)
	var sp shard.Spec
	if r.Shard != nil {
		// cut at the scorer's windows: the shard runs the batches an
		// unsharded run runs, so the merged predictions are the same bits
		sp = *r.Shard
		sp.Unit = scoreWindow(c.Model.BatchSize) // openScorer's batches
		lo, hi = sp.Range(len(samples))
	}
	for _, j := range jobs {
		if r.Shard != nil {
			m, done, err := shard.Done(j.dir, sp, len(samples), j.rec.Fingerprint, predictionOutputs)
			if err != nil {
				return nil, fmt.Errorf("score %s shard %s: %w", j.v.Dir(), r.Shard, err)
			}
			if done {
				r.Log.Info("score: shard already finished, skipped", "variant", j.v.Dir(), "shard", r.Shard.String(), "items", fmt.Sprintf("[%d,%d)", m.Lo, m.Hi))
				j.res = &Result{Variant: j.v, Dir: shard.Dir(j.dir, sp), K: c.Data.HistoryLen, Reused: true}
				if old, err := ReadRecord(j.res.Dir); err == nil {
					j.res.Metrics = old.Result
				}
			} else if m.Fingerprint != "" {
				r.Log.Info("score: shard was made with other settings; recomputing", "variant", j.v.Dir(), "shard", r.Shard.String())
			}
			continue
		}
		if reuse {
			if old, ok := r.upToDate(j.dir, j.rec); ok {
				r.Log.Info("score: up to date, reused", "variant", j.v.Dir(), "dir", j.dir)
				j.res = &Result{Variant: j.v, Dir: j.dir, K: old.K, Metrics: old.Result, Reused: true}
			}
		}
	}
	out := make([]Result, 0, len(jobs))
	var todo []*scoreJob
	for _, j := range jobs {
		if j.res == nil {
			todo = append(todo, j)
		}
	}
	if len(todo) > 0 {
		sc, closeFn, tok, err := r.openScorer(c.Model.Adapter)
		if err != nil {
			return nil, err
		}
		defer closeFn()
		for _, j := range todo {
			seqs, err := r.encodePrompts(ds, samples[lo:hi], j.sel, tok)
			if err != nil {
				return nil, err
			}
			dir := j.dir
			if r.Shard != nil {
				if dir, err = shard.Begin(j.dir, sp); err != nil {
					return nil, fmt.Errorf("score %s: %w", j.v.Dir(), err)
				}
			}
			res, err := r.evaluateFrom(ctx, sc, dir, j.rec, ds, samples[lo:hi], seqs, lo)
			if err != nil {
				return nil, fmt.Errorf("score %s: %w", j.v.Dir(), err)
			}
			if r.Shard != nil {
				if _, err := shard.Commit(j.dir, sp, len(samples), j.rec.Fingerprint, predictionOutputs); err != nil {
					return nil, fmt.Errorf("score %s: %w", j.v.Dir(), err)
				}
				r.Log.Info("score: shard done", "variant", j.v.Dir(), "shard", r.Shard.String(), "items", fmt.Sprintf("[%d,%d)", lo, hi), "of", len(samples))
			} else {
				r.Log.Info("score: done", "variant", j.v.Dir(), "split", split, "n", res.N, "auc", progress.Fixed(res.AUC, 4), "logloss", progress.Fixed(res.LogLoss, 4), "acc", progress.Fixed(res.Accuracy, 4)) // full precision: metrics.json
			}
			j.res = &Result{Variant: j.v, Dir: dir, K: c.Data.HistoryLen, Metrics: res}
		}
	}
	for _, j := range jobs {
		out = append(out, *j.res)
	}
	return out, nil
}

// predictionOutputs is what a score shard writes: one prediction a line.
var predictionOutputs = []shard.Output{{Name: PredictionsFile, LinesPerItem: 1}}

// scoreJob is one variant Score evaluates.
type scoreJob struct {
	v   Variant
	sel prompt.Selector
	rec *Record // its settings and fingerprint
	dir string  // its folder
	res *Result
}

// scoreJobs returns the split's samples (after data.max_eval_samples) and
// the variants Score evaluates on them (recency, and SUBR when
// retrieval.enabled), each with its record and folder.
func (r *Runner) scoreJobs(ctx context.Context, ds *data.Dataset, split string) ([]data.Sample, []*scoreJob, error) {
	c := r.Cfg
	all, err := ds.Split(split)
	if err != nil {
		return nil, nil, err
	}
	samples := c.Data.Limit(all)
	if len(samples) == 0 {
		return nil, nil, fmt.Errorf("score: the %s split has no samples", split)
	}
	adapterFP := ""
	if c.Model.Adapter != "" {
		if adapterFP, err = adapterFingerprint(c.Model.Adapter); err != nil {
			return nil, nil, fmt.Errorf("model.adapter: %w", err)
		}
	}
	// Selectors first: SUBR may need to embed the items, with an engine of
	// its own that is closed again before the scoring engine opens.
	histories := []string{HistoryRecency}
	if c.Retrieval.Enabled {
		histories = append(histories, HistorySUBR)
	}
	var jobs []*scoreJob
	for _, h := range histories {
		j := &scoreJob{v: Variant{Stage: "score", Split: split, History: h, Adapter: c.Model.Adapter}, sel: prompt.Recent{}}
		vecFP := ""
		if h == HistorySUBR {
			if r.Shard != nil {
				// N shards at once must not each embed every item into one file
				if ok, err := r.embeddingsReady(ds); err != nil {
					return nil, nil, err
				} else if !ok {
					return nil, nil, fmt.Errorf("score --shard with retrieval.enabled: the item embeddings %s are missing or out of date; "+
						"make them first with `rella embed` (or `rella embed --shard I/N` for each shard, then `rella merge`)", r.embeddingsPath())
				}
			}
			sel, fp, err := r.subrSelector(ctx, ds)
			if err != nil {
				return nil, nil, err
			}
			j.sel, vecFP = sel, fp
		}
		if j.rec, err = r.newRecord(j.v, c.Model.Adapter, adapterFP, vecFP, nil); err != nil {
			return nil, nil, err
		}
		j.dir = r.path("score", j.v.Dir())
		jobs = append(jobs, j)
	}
	return samples, jobs, nil
}

// openScorer loads the model, the tokenizer and an engine (with the adapter
// in folder adapter when it is not ""); closeFn releases them.
func (r *Runner) openScorer(adapter string) (sc *Scorer, closeFn func(), tok *tokenizer.Tokenizer, err error) {
	m, err := r.openModel()
	if err != nil {
		return nil, nil, nil, err
	}
	tk, err := r.loadTokenizer()
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	yes, no, err := answerIDs(tk)
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	var lo *cpu.LoRA
	if adapter != "" {
		o, params, err := lora.Load(adapter)
		if err != nil {
			m.Close()
			return nil, nil, nil, fmt.Errorf("model.adapter: %w", err)
		}
		lo = &cpu.LoRA{Scale: o.Scale(), Dropout: o.Dropout, Params: params}
		r.Log.Info("score: with LoRA adapter", "adapter", adapter, "tensors", len(params))
	}
	eng, err := r.openEngine(m, lo)
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	sc = &Scorer{Engine: eng, Yes: yes, No: no, BatchSize: r.Cfg.Model.BatchSize, Progress: r.Progress}
	return sc, func() { eng.Close(); m.Close() }, tk, nil
}
