package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

func studyCommand() command {
	return command{
		name:    "study",
		summary: "AUC versus history length K (zero-shot) or training samples N (ReiT): CSV table and PNG plot",
		usage:   "rella study CONFIG|-c CONFIG --param K|N --values 5,10,15 [--resume] [key=value ...]",
		examples: []string{
			"rella study configs/quickstart.yaml --param K --values 1,3,5,10",
			"rella study configs/quickstart.yaml --param N --values 100,200,400 --resume",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("study")
			cfg := configFlag(fs)
			param := fs.String("param", "", "K (history length, zero-shot scoring) or N (training samples, fine-tuning); e.g. --param K")
			list := fs.String("values", "", "comma-separated values of the parameter, e.g. --values 5,10,15")
			resume := fs.Bool("resume", false, "resume unfinished training runs (param N)")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *param != "K" && *param != "N" {
				return usageErrorf("--param must be K or N, got %q", *param)
			}
			var values []int
			for _, s := range strings.Split(*list, ",") {
				v, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || v < 1 {
					return usageErrorf("--values: want positive integers separated by commas, got %q", *list)
				}
				values = append(values, v)
			}
			release, err := claim(e, r, "study", args, needs{model: true})
			if err != nil {
				return err
			}
			defer release()
			rows, err := r.Study(ctx, *param, values, *resume)
			if err != nil {
				return interrupted(e, err, e.resumeLine("study", args))
			}
			for _, row := range rows {
				fmt.Fprintf(e.stdout, "%s=%-6d %-28s auc=%.4f\n", row.Param, row.X, row.Variant, row.AUC)
			}
			return nil
		},
	}
}
