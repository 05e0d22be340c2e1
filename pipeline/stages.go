package pipeline

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/atomicfile"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/prompt"
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

// Prediction is one scored sample, as predictions.jsonl holds it.
type Prediction struct {
	Index int     `json:"index"`
	Label int     `json:"label"`
	P     float64 `json:"p"`
}

// writePredictions writes predictions.jsonl and metrics.json into dir and
// returns the metrics.
func writePredictions(dir string, samples []data.Sample, p []float64) (metrics.Result, error) {
	labels := make([]int, len(samples))
	for i, s := range samples {
		labels[i] = int(s.Label)
	}
	err := atomicfile.Write(dir+"/predictions.jsonl", func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		for i := range samples {
			if err := enc.Encode(Prediction{Index: i, Label: labels[i], P: p[i]}); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
	if err != nil {
		return metrics.Result{}, err
	}
	res := metrics.Compute(labels, p)
	if err := writeJSON(dir+"/metrics.json", res); err != nil {
		return metrics.Result{}, err
	}
	return res, nil
}

// Score runs zero-shot scoring on evaluation.split: with recency histories
// into OUTPUT_DIR/score, and, when retrieval.enabled, with SUBR histories
// into OUTPUT_DIR/score-subr. It returns the metrics by variant name.
func (r *Runner) Score(ctx context.Context, ds *data.Dataset, split string) (map[string]metrics.Result, error) {
	all, err := ds.Split(split)
	if err != nil {
		return nil, err
	}
	samples := r.Cfg.Data.Limit(all)
	if len(samples) == 0 {
		return nil, fmt.Errorf("score: the %s split has no samples", split)
	}
	// Selectors first: SUBR may need to embed the items, with an engine of
	// its own that is closed again before the scoring engine opens.
	type variant struct {
		name string
		sel  prompt.Selector
	}
	variants := []variant{{"score", prompt.Recent{}}}
	if r.Cfg.Retrieval.Enabled {
		subr, err := r.SUBRSelector(ctx, ds)
		if err != nil {
			return nil, err
		}
		variants = append(variants, variant{"score-subr", subr})
	}
	m, err := r.openModel()
	if err != nil {
		return nil, err
	}
	defer m.Close()
	tok, err := r.loadTokenizer()
	if err != nil {
		return nil, err
	}
	yes, no, err := answerIDs(tok)
	if err != nil {
		return nil, err
	}
	var adapter *cpu.LoRA
	if r.Cfg.Model.Adapter != "" {
		o, params, err := lora.Load(r.Cfg.Model.Adapter)
		if err != nil {
			return nil, fmt.Errorf("model.adapter: %w", err)
		}
		adapter = &cpu.LoRA{Scale: o.Scale(), Dropout: o.Dropout, Params: params}
		r.Log.Info("score: with LoRA adapter", "adapter", r.Cfg.Model.Adapter, "tensors", len(params))
	}
	eng, err := r.openEngine(m, adapter)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	sc := &Scorer{Engine: eng, Yes: yes, No: no, BatchSize: r.Cfg.Model.BatchSize, Progress: r.Progress}

	out := map[string]metrics.Result{}
	for _, v := range variants {
		seqs, err := r.encodePrompts(ds, samples, v.sel, tok)
		if err != nil {
			return nil, err
		}
		p, err := sc.PYes(ctx, seqs, v.name)
		if err != nil {
			return nil, err
		}
		res, err := writePredictions(r.path(v.name), samples, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		r.Log.Info(v.name+": done", "split", split, "n", res.N, "auc", res.AUC, "logloss", res.LogLoss, "acc", res.Accuracy)
		out[v.name] = res
	}
	return out, nil
}
