package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/rella-project/rella/prompt"
)

func promptsCommand() command {
	return command{
		name:    "prompts",
		summary: "print a split's ReLLa prompts as JSON Lines {\"input\", \"output\"}",
		usage:   "rella prompts CONFIG|-c CONFIG --split train|valid|test [--limit N] [--retrieval] [key=value ...]",
		examples: []string{
			"rella prompts configs/quickstart.yaml --split test --limit 3",
			"rella prompts configs/quickstart.yaml --split test --retrieval data.history_len=10",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("prompts")
			cfg := configFlag(fs)
			split := fs.String("split", "", "which split's prompts: train, valid or test (e.g. --split test)")
			limit := fs.Int("limit", 0, "print only the first N prompts, 0 = all (e.g. --limit 3)")
			subr := fs.Bool("retrieval", false, "choose each history by SUBR instead of recency (needs rella retrieve first)")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			switch *split {
			case "train", "valid", "test":
			default:
				return usageErrorf("--split must be train, valid or test, got %q", *split)
			}
			if *limit < 0 {
				return usageErrorf("--limit must not be negative")
			}
			release, err := claim(e, r, "prompts", args, needs{})
			if err != nil {
				return err
			}
			defer release()
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			samples, err := ds.Split(*split)
			if err != nil {
				return err
			}
			if *limit > 0 && len(samples) > *limit {
				samples = samples[:*limit]
			}
			var sel prompt.Selector = prompt.Recent{}
			if *subr {
				if sel, err = r.SUBRSelector(ctx, ds); err != nil {
					return err
				}
			}
			b, err := prompt.New(ds.Kind, r.Cfg.Prompt)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(e.stdout)
			enc.SetEscapeHTML(false)
			k := r.Cfg.Data.HistoryLen
			var hist []int32
			for _, s := range samples {
				hist = sel.Select(s, k, hist[:0])
				if err := enc.Encode(struct {
					Input  string `json:"input"`
					Output string `json:"output"`
				}{b.Prompt(ds, s, hist), prompt.Answer(s.Label)}); err != nil {
					return fmt.Errorf("write prompts: %w", err)
				}
			}
			return nil
		},
	}
}
