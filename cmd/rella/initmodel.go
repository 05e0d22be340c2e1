package main

import (
	"context"
	"fmt"

	"github.com/rella-project/rella/model"
)

// initModelCommand writes a random LLaMA checkpoint (tests, quickstart).
func initModelCommand() command {
	return command{
		name:    "init-model",
		summary: "write a small random LLaMA checkpoint (HF layout) for tests and the quickstart",
		usage: "rella init-model --out DIR [--tokenizer DIR] [--hidden N] [--layers N] [--heads N] [--kv-heads N] " +
			"[--intermediate N] [--vocab N] [--seed N] [--dtype f32|bf16|f16]",
		examples: []string{
			"rella init-model --out runs/tiny-model --tokenizer ../shared/fixtures/tokenizer/llama --hidden 64 --layers 2",
		},
		run: runInitModel,
	}
}

func runInitModel(ctx context.Context, e *env, args []string) error {
	d := model.DefaultInitOptions()
	fs := newFlags("init-model")
	out := fs.String("out", "", "folder to create (must not exist or be empty)")
	tok := fs.String("tokenizer", "", "folder to copy tokenizer.model/tokenizer.json/... from")
	hidden := fs.Int("hidden", d.Hidden, "hidden size")
	layers := fs.Int("layers", d.Layers, "decoder layers")
	heads := fs.Int("heads", d.Heads, "attention heads")
	kv := fs.Int("kv-heads", d.KVHeads, "key/value heads (grouped-query attention)")
	inter := fs.Int("intermediate", d.Intermediate, "MLP intermediate size")
	vocab := fs.Int("vocab", d.Vocab, "vocabulary size")
	seed := fs.Int64("seed", d.Seed, "random seed")
	dtype := fs.String("dtype", d.DType, "stored precision: f32, bf16 or f16")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected argument %q", rest[0])
	}
	if *out == "" {
		return usageErrorf("--out is required")
	}
	for name, v := range map[string]int{"hidden": *hidden, "layers": *layers, "heads": *heads, "kv-heads": *kv, "intermediate": *inter, "vocab": *vocab} {
		if v <= 0 {
			return usageErrorf("--%s must be positive, got %d", name, v)
		}
	}
	o := model.InitOptions{Hidden: *hidden, Layers: *layers, Heads: *heads, KVHeads: *kv, Intermediate: *inter,
		Vocab: *vocab, Seed: *seed, DType: *dtype, Tokenizer: *tok}
	if err := model.Init(*out, o); err != nil {
		return err
	}
	e.log.Info("random model written", "dir", *out, "hidden", o.Hidden, "layers", o.Layers, "vocab", o.Vocab, "dtype", o.DType)
	_ = ctx
	fmt.Fprintln(e.stdout, *out)
	return nil
}
