package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/rella-project/rella/configs"
)

func studyCommand() command {
	return command{
		name:    "study",
		summary: "AUC versus history length K (zero-shot) or training samples N (ReiT): CSV table and PNG plot",
		usage:   "rella study CONFIG|-c CONFIG --param K|N --values 5,10,15 [--baseline sim[,din...]] [--resume] [key=value ...]",
		examples: []string{
			"rella study configs/quickstart.yaml --param K --values 1,3,5,10",
			"rella study configs/quickstart.yaml --param N --values 100,200,400 --resume",
			"rella study configs/ml1m-reit.yaml --param N --values 512,1024,2048 --baseline sim   # SIM on the same N samples, as Figure 7",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("study")
			cfg := configFlag(fs)
			param := fs.String("param", "", "K (history length, zero-shot scoring) or N (training samples, fine-tuning); e.g. --param K")
			list := fs.String("values", "", "comma-separated values of the parameter, e.g. --values 5,10,15")
			resume := fs.Bool("resume", false, "resume unfinished training runs (param N)")
			base := fs.String("baseline", "", "with --param N: also train these ID baselines on the same N samples (comma-separated: deepfm, dcnv2, din, sim, sasrec; settings from the config's baseline section); e.g. --baseline sim")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *param != "K" && *param != "N" {
				return usageErrorf("--param must be K or N, got %q", *param)
			}
			var baselines []string
			if *base != "" {
				if *param != "N" {
					return usageErrorf("--baseline goes with --param N, got --param %s", *param)
				}
				for _, b := range strings.Split(*base, ",") {
					b = strings.TrimSpace(b)
					if !slices.Contains(configs.BaselineModels, b) {
						return usageErrorf("--baseline: want models from %s separated by commas, got %q", strings.Join(configs.BaselineModels, ", "), *base)
					}
					baselines = append(baselines, b)
				}
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
			rows, err := r.Study(ctx, *param, values, *resume, baselines...)
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
