package main

import (
	"context"
	"fmt"

	"github.com/rella-project/rella/pipeline"
)

func scoreCommand() command {
	return command{
		name:    "score",
		summary: "zero-shot P(Yes) for a split's prompts; writes OUTPUT_DIR/score/<split>-<recency|subr>[-<adapter>]/{predictions.jsonl,metrics.json}",
		usage:   "rella score -c CONFIG [--split test|valid|train] [key=value ...]",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("score")
			cfg := configFlag(fs)
			split := fs.String("split", "", "split to score (default: evaluation.split)")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *split == "" {
				*split = r.Cfg.Evaluation.Split
			}
			switch *split {
			case "train", "valid", "test":
			default:
				return usageErrorf("--split must be train, valid or test, got %q", *split)
			}
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			res, err := r.Score(ctx, ds, *split, false)
			if err != nil {
				return err
			}
			fmt.Fprint(e.stdout, (&pipeline.Summary{Rows: res}).Table())
			return nil
		},
	}
}
