package main

import (
	"context"

	"github.com/rella-project/rella/cuda"
)

// gpuSelftestCommand checks the GPU path on the machine it runs on (kernels
// against their CPU references, the engine end to end on a small checkpoint,
// scoring speed). In a build without the rellagpu tag it says how to build one.
func gpuSelftestCommand() command {
	return command{
		name:    "gpu-selftest",
		summary: "check the GPU kernels and engine on this machine (GPU builds; see scripts/gpu-check.sh)",
		usage:   "rella gpu-selftest [--device N] [--seed S] [--model DIR] [--bench DIR [--reps N]] [--precision bf16|f16|f32]",
		examples: []string{
			"rella gpu-selftest",
			"rella gpu-selftest --device 1 --model ../shared/fixtures/stories260K --precision bf16",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("gpu-selftest")
			dev := fs.Int("device", 0, "CUDA device index")
			seed := fs.Uint64("seed", 0, "seed of the random inputs (0: from the clock)")
			modelDir := fs.String("model", "", "small HF checkpoint to run end to end (e.g. the stories260K fixture)")
			benchDir := fs.String("bench", "", "checkpoint with seqs.json (scripts/hf_bench.py) to time scoring on")
			reps := fs.Int("reps", 5, "timed repetitions of the benchmark")
			prec := fs.String("precision", "", "engine precision for the benchmark and, when f16 or bf16, the half-type run of --model (default: bf16, or f16 before sm_80)")
			rest, err := parseFlags(fs, args)
			if err != nil {
				return err
			}
			if len(rest) > 0 {
				return usageErrorf("unexpected arguments %q", rest)
			}
			if _, _, err := cuda.ParsePrecision(*prec); err != nil {
				return usageErrorf("%v", err)
			}
			return cuda.SelfTest(ctx, cuda.SelfTestOptions{Device: *dev, Seed: *seed, ModelDir: *modelDir,
				BenchDir: *benchDir, BenchReps: *reps, Precision: *prec}, e.stdout, e.log)
		},
	}
}
