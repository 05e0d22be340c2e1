package main

import (
	"context"
	"fmt"
	"strings"
)

func runCommand() command {
	return command{
		name:    "run",
		summary: "run the config's stages in order (prepare, embed, retrieve, score, train)",
		usage:   "rella run CONFIG|-c CONFIG [--resume [--force]] [key=value ...]",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("run")
			cfg := configFlag(fs)
			force := fs.Bool("force", false, "with --resume: accept a checkpoint whose run-defining settings differ from the config")
			resume := fs.Bool("resume", false, "skip finished stages and resume training from the newest complete checkpoint")
			// The config may also come first, as in `rella run configs/quickstart.yaml`.
			if len(args) > 0 && !strings.HasPrefix(args[0], "-") && !strings.Contains(args[0], "=") {
				args = append([]string{"-c", args[0]}, args[1:]...)
			}
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			r.Force = *force
			sum, err := r.Run(ctx, *resume)
			if sum != nil {
				fmt.Fprint(e.stdout, sum.Table())
			}
			if err != nil {
				return interrupted(e, err, "rella run -c "+*cfg+" --resume")
			}
			return nil
		},
	}
}
