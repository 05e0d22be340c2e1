//go:build rellagpu

package cuda

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// TestTrainBench times Trainer.LossGrad on the checkpoint in
// $RELLA_TRAIN_BENCH_DIR (e.g. the LLaMA-7B-shaped one scripts/hf_bench.py
// writes) with ReLLa's adapters (rank 8, scale 2, dropout 0.05 on q_proj and
// v_proj of every layer, B non-zero so every path computes), on micro-batches
// of $RELLA_TRAIN_BENCH_BATCH (default 8) random sequences of
// $RELLA_TRAIN_BENCH_LEN tokens (default 512) labelled on their last 32
// tokens, and logs a BENCH line: tokens per second and MFU against
// H200DenseBF16 with GPU.md's count of 4N' + 4Vd + 3A FLOPs per token (the
// recomputation's extra forward is not counted, and the LM head runs only at
// the labelled rows: this is the nominal MFU HF would be credited with). Skipped when
// the variable is unset: run it on the GPU machine with
// cuda-gpu.test -test.run TrainBench -test.v.
func TestTrainBench(t *testing.T) {
	dir := os.Getenv("RELLA_TRAIN_BENCH_DIR")
	if dir == "" {
		t.Skip("RELLA_TRAIN_BENCH_DIR is not set")
	}
	envInt := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	B, L, reps := envInt("RELLA_TRAIN_BENCH_BATCH", 8), envInt("RELLA_TRAIN_BENCH_LEN", 512), envInt("RELLA_TRAIN_BENCH_REPS", 5)
	m, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config
	r := rand.New(rand.NewPCG(1, 2))
	var params []*engine.Param
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		for _, mod := range []string{"q_proj", "v_proj"} {
			in, out, _ := moduleDims(cfg, mod)
			for _, ab := range []struct {
				name       string
				rows, cols int
			}{{"A", 8, in}, {"B", out, 8}} {
				v := make([]float32, ab.rows*ab.cols)
				for i := range v {
					v[i] = float32(r.NormFloat64() * 0.01)
				}
				params = append(params, &engine.Param{Name: fmt.Sprintf("base_model.model.model.layers.%d.self_attn.%s.lora_%s.weight", l, mod, ab.name),
					Shape: []int{ab.rows, ab.cols}, Value: v, Grad: make([]float32, len(v))})
			}
		}
	}
	start := time.Now()
	tr, err := NewTrainer(m, TrainOptions{Options: Options{MaxTokens: B * L}, Scale: 2, Dropout: 0.05, Params: params}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	t.Logf("loaded %s in %v (%v)", dir, time.Since(start).Round(time.Millisecond), tr.Elem())
	batch := make([]engine.Example, B)
	labelled := 0
	for i := range batch {
		ex := engine.Example{Tokens: make([]int, L), Labels: make([]int, L)}
		for j := range ex.Tokens {
			ex.Tokens[j] = r.IntN(cfg.VocabSize)
			ex.Labels[j] = engine.IgnoreIndex
			if j >= L-32 {
				ex.Labels[j] = r.IntN(cfg.VocabSize)
				labelled++
			}
		}
		batch[i] = ex
	}
	ctx := context.Background()
	if _, _, err := tr.LossGrad(ctx, batch, 1); err != nil { // warm-up: kernels, allocator, cuBLAS heuristics
		t.Fatal(err)
	}
	times := make([]float64, reps)
	for i := range times {
		t0 := time.Now()
		if _, _, err := tr.LossGrad(ctx, batch, uint64(i+2)); err != nil { // returns after its downloads: synchronised
			t.Fatal(err)
		}
		times[i] = time.Since(t0).Seconds()
	}
	sort.Float64s(times)
	med := times[len(times)/2]
	tokens := float64(B * L)
	nonEmb := float64(WeightBytes(cfg, F32)/4) - float64(cfg.VocabSize*cfg.HiddenSize) - float64(cfg.HiddenSize)
	if !cfg.TieWordEmbeddings {
		nonEmb -= float64(cfg.VocabSize * cfg.HiddenSize)
	}
	attn := 4 * float64(L) * float64(cfg.HiddenSize*cfg.NumHiddenLayers) // A = 4 s d L (GPU.md)
	flops := tokens * (4*nonEmb + 4*float64(cfg.VocabSize*cfg.HiddenSize) + 3*attn)
	t.Logf("BENCH go_train_lossgrad batch=%d len=%d tokens=%d labelled=%d reps=%d median_s=%.4f tokens_per_s=%.0f tflops=%.1f mfu=%.3f",
		B, L, B*L, labelled, reps, med, tokens/med, flops/med/1e12, flops/med/H200DenseBF16)
}
