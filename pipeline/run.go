package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/rella-project/rella/metrics"
)

// Summary collects the metrics a run produced, by variant.
type Summary struct {
	Split string
	Rows  []SummaryRow
}

// SummaryRow is one line of the summary table.
type SummaryRow struct {
	Name   string
	Result metrics.Result
}

// Table renders the summary for a person.
func (s *Summary) Table() string {
	if len(s.Rows) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s %8s %8s %8s %8s\n", "variant ("+s.Split+")", "n", "auc", "logloss", "acc")
	for _, r := range s.Rows {
		fmt.Fprintf(&b, "%-28s %8d %8.4f %8.4f %8.4f\n", r.Name, r.Result.N, r.Result.AUC, r.Result.LogLoss, r.Result.Accuracy)
	}
	return b.String()
}

var variantNames = map[string]string{
	"score":      "zero-shot (recency top-K)",
	"score-subr": "zero-shot + SUBR",
	"train":      "fine-tuned (LoRA)",
}

// Run executes the config's stages in order. With resume, a stage whose
// results are already in the output folder is not run again, and training
// continues from its newest complete checkpoint.
func (r *Runner) Run(ctx context.Context, resume bool) (*Summary, error) {
	c := r.Cfg
	sum := &Summary{Split: c.Evaluation.Split}
	ds, err := r.Prepare(ctx)
	if err != nil {
		return nil, err
	}
	for _, stage := range c.Stages {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		switch stage {
		case "prepare":
			// done above: every stage needs the samples
		case "embed":
			if _, err := r.Embed(ctx, ds); err != nil {
				return sum, err
			}
		case "retrieve":
			if err := r.Retrieve(ctx, ds); err != nil {
				return sum, err
			}
		case "score":
			if resume && r.readMetrics("score", sum) {
				r.Log.Info("score: already done, skipped (--resume)")
				r.readMetrics("score-subr", sum)
				continue
			}
			res, err := r.Score(ctx, ds, c.Evaluation.Split)
			if err != nil {
				return sum, err
			}
			for _, name := range []string{"score", "score-subr"} {
				if m, ok := res[name]; ok {
					sum.Rows = append(sum.Rows, SummaryRow{variantNames[name], m})
				}
			}
		case "train":
			res, err := r.Train(ctx, ds, resume)
			if err != nil {
				return sum, err
			}
			sum.Rows = append(sum.Rows, SummaryRow{variantNames["train"], res})
		default:
			return sum, fmt.Errorf("stages: unknown stage %q", stage)
		}
	}
	return sum, nil
}

// readMetrics adds the metrics.json a finished stage wrote to sum; it
// reports whether there was one.
func (r *Runner) readMetrics(name string, sum *Summary) bool {
	b, err := os.ReadFile(r.path(name, "metrics.json"))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	var m metrics.Result
	if err != nil || json.Unmarshal(b, &m) != nil {
		return false
	}
	sum.Rows = append(sum.Rows, SummaryRow{variantNames[name], m})
	return true
}
