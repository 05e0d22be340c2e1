package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/rella-project/rella/baseline"
	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/experiments"
)

// Study runs one of the paper's two studies and writes its table and plot
// to OUTPUT_DIR/study/<name>.{csv,png}:
//   - param "K": zero-shot test AUC (recency, and SUBR when retrieval.enabled)
//     for each history length in values;
//   - param "N": the fine-tuned test AUC for each number of drawn training
//     samples in values (retrieval.train_type decides ReiT or an ablation).
//
// With baselines (param N only), each listed ID baseline (e.g. "sim") is
// trained on the same N drawn samples (baseline.train_samples = N, the
// ReiT draw) and its test AUC joins the table and plot, as the paper's
// Figure 7 puts SIM beside ReLLa; its results go to
// OUTPUT_DIR/study/N-<value>/baseline/test-<model>-n<value>/.
//
// Each value runs in OUTPUT_DIR/study/<param>-<value> (with its results
// in the folders a run has: score/<split>-<history>/, train/test-<history>/);
// all share one set of item embeddings under OUTPUT_DIR/subr. With resume,
// results whose fingerprint matches the current settings are reused.
func (r *Runner) Study(ctx context.Context, param string, values []int, resume bool, baselines ...string) ([]experiments.Row, error) {
	if param != experiments.ParamK && param != experiments.ParamN {
		return nil, fmt.Errorf("study: param must be %s or %s, got %q", experiments.ParamK, experiments.ParamN, param)
	}
	if len(baselines) > 0 && param != experiments.ParamN {
		return nil, fmt.Errorf("study: baselines go beside the N study only (param %s)", experiments.ParamN)
	}
	for _, b := range baselines {
		if !slices.Contains(configs.BaselineModels, b) {
			return nil, fmt.Errorf("study: unknown baseline %q (want one of %s)", b, strings.Join(configs.BaselineModels, ", "))
		}
	}
	if len(values) == 0 {
		return nil, fmt.Errorf("study: no values")
	}
	base := r.Cfg.OutputDir
	var rows []experiments.Row
	info := experiments.Info{Dataset: string(r.Cfg.Data.Dataset), Model: r.Cfg.Model.Path, Split: r.Cfg.Evaluation.Split}
	if param == experiments.ParamN {
		info.Split = "test"
	}
	for _, v := range values {
		c := *r.Cfg
		switch param {
		case experiments.ParamK:
			c.Data.HistoryLen = v
		case experiments.ParamN:
			c.Retrieval.TrainSamples = v
		}
		c.OutputDir = filepath.Join(base, "study", param+"-"+strconv.Itoa(v))
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("study %s=%d: %w", param, v, err)
		}
		sub := &Runner{Cfg: &c, Log: r.Log.With("study", param, "value", v), Progress: r.Progress, Out: r.Out,
			SUBRDir: filepath.Join(base, "subr")}
		ds, err := sub.Prepare(ctx)
		if err != nil {
			return nil, err
		}
		switch param {
		case experiments.ParamK:
			res, err := sub.Score(ctx, ds, c.Evaluation.Split, resume)
			if err != nil {
				return nil, err
			}
			for _, m := range res {
				rows = append(rows, experiments.Row{Param: param, X: v, Variant: m.Name(), AUC: m.Metrics.AUC})
				info.N = m.Metrics.N
			}
		case experiments.ParamN:
			res, err := sub.Train(ctx, ds, resume)
			if err != nil {
				return nil, err
			}
			for _, m := range res {
				h := "recency"
				if m.Variant.History == HistorySUBR {
					h = "SUBR"
				}
				rows = append(rows, experiments.Row{Param: param, X: v, Variant: "fine-tuned (" + c.Retrieval.TrainType + ", " + h + " prompts)", AUC: m.Metrics.AUC})
				info.N = m.Metrics.N
			}
			for _, b := range baselines {
				c.Baseline.Model, c.Baseline.TrainSamples = b, v
				res, err := sub.Baseline(ctx, ds, "test", resume)
				if err != nil {
					return nil, fmt.Errorf("study %s=%d: baseline %s: %w", param, v, b, err)
				}
				rows = append(rows, experiments.Row{Param: param, X: v, Variant: baseline.DisplayName(b) + " (ID baseline)", AUC: res.Metrics.AUC})
			}
		}
	}
	name := "auc-vs-" + param
	if err := experiments.WriteStudy(filepath.Join(base, "study"), name, info, rows); err != nil {
		return nil, err
	}
	r.Log.Info("study: written", "csv", filepath.Join(base, "study", name+".csv"), "png", filepath.Join(base, "study", name+".png"))
	return rows, nil
}
