package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/model"
)

// logitsCommand prints a model's logits for one token sequence (CPU engine).
func logitsCommand() command {
	return command{
		name:    "logits",
		summary: "print a model's last-position logits and per-position argmax for token ids (CPU)",
		usage:   "rella logits --model DIR --tokens 1,403,407 [--dtype float32|float64]",
		examples: []string{
			"rella logits --model ../shared/fixtures/stories260K --tokens 1,403,407",
		},
		run: runLogits,
	}
}

func runLogits(ctx context.Context, e *env, args []string) error {
	fs := newFlags("logits")
	dir := fs.String("model", "", "HF LLaMA checkpoint folder (config.json + safetensors)")
	list := fs.String("tokens", "", "comma-separated token ids (BOS included if wanted)")
	dtype := fs.String("dtype", "float32", "compute precision: float32 or float64")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected argument %q", rest[0])
	}
	if *dir == "" || *list == "" {
		return usageErrorf("--model and --tokens are required")
	}
	var ids []int
	for _, f := range strings.Split(*list, ",") {
		id, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return usageErrorf("--tokens: %q is not an integer", f)
		}
		ids = append(ids, id)
	}
	m, err := model.Load(*dir)
	if err != nil {
		return err
	}
	defer m.Close()
	eng, err := cpu.New(m, cpu.Options{DType: *dtype, Log: e.log})
	if err != nil {
		return err
	}
	defer eng.Close()
	// Every prefix's last logits give the argmax at every position.
	prefixes := make([][]int, len(ids))
	for i := range ids {
		prefixes[i] = ids[:i+1]
	}
	logits, err := eng.LastLogits(ctx, prefixes, nil)
	if err != nil {
		return err
	}
	out := struct {
		Last   []float32 `json:"last"`
		Argmax []int     `json:"argmax"`
	}{Last: logits[len(ids)-1]}
	for _, l := range logits {
		best := 0
		for j, v := range l {
			if v > l[best] {
				best = j
			}
		}
		out.Argmax = append(out.Argmax, best)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(e.stdout, "%s\n", b); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
}
