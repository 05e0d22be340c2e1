package main

import "context"

func prepareCommand() command {
	return command{
		name:    "prepare",
		summary: "build the CTR samples of a dataset and write OUTPUT_DIR/data/stats.json",
		usage:   "rella prepare -c CONFIG [key=value ...]",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("prepare")
			cfg := configFlag(fs)
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			_, err = r.Prepare(ctx)
			return err
		},
	}
}
