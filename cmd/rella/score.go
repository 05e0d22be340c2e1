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
		usage:   "rella score CONFIG|-c CONFIG [--split test|valid|train] [--shard I/N|auto [--shards N]] [key=value ...]",
		examples: []string{
			"rella score configs/quickstart.yaml",
			"rella score configs/quickstart.yaml --split valid model.adapter=runs/quickstart/adapter",
			"rella score -c configs/ml1m-zeroshot.yaml --shard 3/8   # one of 8 slices; rella merge when all 8 finished",
			"rella score -c configs/ml1m-zeroshot.yaml --shard auto  # in a Slurm array task or Kubernetes Indexed Job",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("score")
			cfg := configFlag(fs)
			split := fs.String("split", "", "split to score: test, valid or train (default: evaluation.split; e.g. --split valid)")
			sf := addShardFlags(fs)
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *split, err = splitOr(*split, r); err != nil {
				return err
			}
			if r.Shard, err = sf.resolve(e); err != nil {
				return err
			}
			release, err := claimShard(e, r, "score", args, needs{model: true}, r.Shard)
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
