package main

import (
	"context"
	"fmt"
)

func runCommand() command {
	return command{
		name:    "run",
		summary: "run the config's stages in order (prepare, embed, retrieve, score, train)",
		usage:   "rella run CONFIG|-c CONFIG [--resume [--force]] [key=value ...]",
		examples: []string{
			"rella run configs/quickstart.yaml",
			"rella run configs/quickstart.yaml --resume",
			"rella run configs/ml1m-zeroshot.yaml data.dir=/data/ml-1m model.path=/models/vicuna-7b model.device=gpu model.dtype=bf16",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("run")
			cfg := configFlag(fs)
			force, resume := resumeFlags(fs, "skip finished stages and resume training from the newest complete checkpoint")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *force && !*resume {
				return usageErrorf("--force only applies with --resume")
			}
			release, err := claim(e, r, "run", args, needs{model: usesModel(r.Cfg.Stages)})
			if err != nil {
				return err
			}
			defer release()
			r.Force = *force
			sum, err := r.Run(ctx, *resume)
			if sum != nil {
				fmt.Fprint(e.stdout, sum.Table())
			}
			if err != nil {
				return interrupted(e, err, e.resumeLine("run", args))
			}
			return nil
		},
	}
}
