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
		usage:   "rella score CONFIG|-c CONFIG [--split test|valid|train] [key=value ...]",
		examples: []string{
			"rella score configs/quickstart.yaml",
			"rella score configs/quickstart.yaml --split valid model.adapter=runs/quickstart/adapter",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("score")
			cfg := configFlag(fs)
			split := fs.String("split", "", "split to score: test, valid or train (default: evaluation.split; e.g. --split valid)")
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
			release, err := claim(e, r, "score", args, needs{model: true})
			if err != nil {
				return err
			}
			defer release()
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
