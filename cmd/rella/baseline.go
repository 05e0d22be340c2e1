package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/pipeline"
)

func baselineCommand() command {
	return command{
		name:    "baseline",
		summary: "train an ID-based CTR baseline (deepfm, dcnv2, din, sim, sasrec) on the train split, pick the epoch on valid; writes OUTPUT_DIR/baseline/<split>-<model>[-n<N>]/{metrics.json,predictions.jsonl,log.jsonl,model.safetensors,vocab.json}",
		usage:   "rella baseline CONFIG|-c CONFIG [--model deepfm|dcnv2|din|sim|sasrec] [--split test|valid] [--resume] [key=value ...]",
		examples: []string{
			"rella baseline -c configs/ml1m-baselines.yaml --model sim",
			"rella baseline -c configs/ml1m-baselines.yaml --model din baseline.epochs=3 baseline.embedding_size=32",
			"rella baseline -c configs/bookcrossing-baselines.yaml --model deepfm baseline.train_samples=1024   # N-shot: the ReiT draw",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("baseline")
			cfg := configFlag(fs)
			model := fs.String("model", "", "the model: deepfm, dcnv2, din, sim or sasrec (default: baseline.model; e.g. --model sim)")
			split := fs.String("split", "", "split to score with the trained model: test or valid (default: evaluation.split)")
			resume := fs.Bool("resume", false, "return a finished result with the same settings instead of training again")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *model != "" {
				if !slices.Contains(configs.BaselineModels, *model) {
					return usageErrorf("--model must be one of %s, got %q", strings.Join(configs.BaselineModels, ", "), *model)
				}
				r.Cfg.Baseline.Model = *model
			}
			if *split, err = splitOr(*split, r); err != nil {
				return err
			}
			release, err := claim(e, r, "baseline", args, needs{})
			if err != nil {
				return err
			}
			defer release()
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			res, err := r.Baseline(ctx, ds, *split, *resume)
			if err != nil {
				return err
			}
			fmt.Fprint(e.stdout, (&pipeline.Summary{Rows: []pipeline.Result{res}}).Table())
			return nil
		},
	}
}
