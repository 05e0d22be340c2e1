//go:build rellagpu

package ncclcomm_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/distributed/ncclcomm"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

// device opens GPU 0 and a one-rank NCCL group on it (RELLA_NCCL_LIBRARY
// names libnccl.so.2 when it is not on the loader's path). Without a GPU or
// NCCL the test skips, unless RELLA_REQUIRE_GPU=1 (the device script).
func device(t *testing.T) (*cuda.Device, *ncclcomm.Comm) {
	t.Helper()
	fail := t.Skip
	if os.Getenv("RELLA_REQUIRE_GPU") == "1" {
		fail = t.Fatal
	}
	dev, err := cuda.OpenDevice(0, nil)
	if err != nil {
		fail("no GPU:", err)
	}
	t.Cleanup(func() { dev.Close() })
	c, err := ncclcomm.New(context.Background(), distributed.Single{}, dev, os.Getenv("RELLA_NCCL_LIBRARY"))
	if err != nil {
		fail("NCCL:", err)
	}
	t.Cleanup(func() { c.Close() })
	return dev, c
}

// issue 14: world size 1 through the NCCL path (the trainer's
// data-parallel path, gradients all-reduced on the GPU with ncclAllReduce)
// ends bit for bit as the plain single-process path: adapter, optimiser
// state, checkpoints and log.
func TestNCCLWorldOneEqualsPlain(t *testing.T) {
	_, comm := device(t)
	x := make([]float32, 1<<16+3)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	y := append([]float32(nil), x...)
	if err := comm.AllReduceSumFloat32(context.Background(), y); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
			t.Fatalf("one-rank all-reduce changed value %d: %v -> %v", i, x[i], y[i])
		}
	}

	const vocab = 12
	lo := lora.Options{R: 2, Alpha: 4, Dropout: 0.1, TargetModules: []string{"q_proj"}}
	train, _, _ := trainertest.Data(37, vocab, 5)
	_, vp, vl := trainertest.Data(40, vocab, 6)
	o := trainer.DefaultOptions()
	o.LearningRate, o.NumEpochs, o.BatchSize, o.MicroBatchSize = 0.05, 2, 10, 3
	o.EvalSteps, o.SaveSteps, o.MaxGradNorm = 2, 4, 0.5
	s := trainertest.Setup{
		NewEngine: func(t testing.TB) engine.Trainer { return trainertest.NewLinear(vocab, 5, lo, 11) },
		Train:     train, Options: o, LoRA: lo, Seed: 42,
		Evaluate: func(eng engine.Trainer) trainer.Evaluator {
			return trainertest.Evaluator(eng, vp, vl, trainertest.No, trainertest.Yes)
		},
	}
	root := t.TempDir()
	plain := trainertest.Train(t, s, filepath.Join(root, "plain"))
	eng := s.NewEngine(t)
	dir := filepath.Join(root, "nccl")
	sum, err := trainer.Run(context.Background(), trainer.Job{Engine: eng, Train: s.Train, Options: s.Options, LoRA: s.LoRA,
		BaseModel: "test-model", Seed: s.Seed, Dir: dir, Config: []byte("seed: 1\n"), Evaluate: s.Evaluate(eng), Comm: comm})
	if err != nil {
		t.Fatal(err)
	}
	trainertest.Compare(t, plain, trainertest.Outcome{Params: eng.Params(), Summary: sum, Dir: dir})
	t.Logf("LIB NCCL world size 1: %d steps equal to the plain path", sum.Steps)
}
