package trainer_test

import (
	"fmt"
	"testing"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

const vocab = 12

// setup is a small run: 37 examples, batch 10 in micro-batches of 3 (4 per
// step, the last of 1), 3 steps per epoch (7 examples left over each epoch),
// 3 epochs = 9 steps, evaluation every 2 steps, checkpoints every 4.
func setup(t testing.TB) trainertest.Setup {
	lo := lora.Options{R: 2, Alpha: 4, Dropout: 0.1, TargetModules: []string{"q_proj"}}
	train, _, _ := trainertest.Data(37, vocab, 5)
	_, vp, vl := trainertest.Data(40, vocab, 6)
	o := trainer.DefaultOptions()
	o.LearningRate = 0.05
	o.NumEpochs = 3
	o.BatchSize = 10
	o.MicroBatchSize = 3
	o.EvalSteps = 2
	o.SaveSteps = 4
	o.SaveTotalLimit = 2
	o.WeightDecay = 0.01
	o.WarmupSteps = 2
	o.MaxGradNorm = 0.5
	return trainertest.Setup{
		NewEngine: func(t testing.TB) engine.Trainer { return trainertest.NewLinear(vocab, 5, lo, 11) },
		Train:     train, Options: o, LoRA: lo, Seed: 42,
		Evaluate: func(eng engine.Trainer) trainer.Evaluator {
			return trainertest.Evaluator(eng, vp, vl, trainertest.No, trainertest.Yes)
		},
	}
}

// TestResumeExact is the central reliability test: cancelling at any
// micro-batch (mid-window, at a window boundary, in epoch >= 1, several
// times) or during an evaluation, then resuming, ends bit-identical to an
// uninterrupted run.
func TestResumeExact(t *testing.T) {
	s := setup(t)
	plan, _ := s.Options.Plan(len(s.Train))
	if plan.Accum != 4 || plan.StepsPerEpoch != 3 || plan.TotalSteps != 9 {
		t.Fatalf("plan %+v, want accum 4, 3 steps per epoch, 9 steps", plan)
	}
	cases := [][]trainertest.Cut{
		{{MicroBatches: 2}},                       // mid-window of step 1, no checkpoint yet
		{{MicroBatches: 4}},                       // exactly at the end of step 1's window
		{{MicroBatches: 14}},                      // mid-window of step 4, epoch 1
		{{MicroBatches: 17}},                      // step 5 (epoch 1), one micro-batch in
		{{MicroBatches: 5}, {MicroBatches: 23}},   // twice, the second in epoch 1 mid-window
		{{MicroBatches: 30}, {MicroBatches: 31}},  // twice in a row, epoch 2
		{{Eval: 2}},                               // during the evaluation after step 4
		{{Eval: 1}, {MicroBatches: 9}, {Eval: 4}}, // mixed
		{{MicroBatches: 35}},                      // in the last window
		{{MicroBatches: 36}},                      // after the last micro-batch: the final evaluation is cut
	}
	for _, cuts := range cases {
		t.Run(fmt.Sprint(cuts), func(t *testing.T) {
			trainertest.ResumeExact(t, s, cuts...)
		})
	}
}

// TestResumeExactNoEvaluator covers runs without validation (checkpoints
// every epoch).
func TestResumeExactNoEvaluator(t *testing.T) {
	s := setup(t)
	s.Evaluate = nil
	s.Options.SaveSteps = 0
	trainertest.ResumeExact(t, s, trainertest.Cut{MicroBatches: 7}, trainertest.Cut{MicroBatches: 26})
}

// TestResumeExactEveryCut cancels at every micro-batch of the run in turn.
func TestResumeExactEveryCut(t *testing.T) {
	if testing.Short() {
		t.Skip("36 interrupted runs; -short")
	}
	s := setup(t)
	straight := trainertest.Train(t, s, t.TempDir())
	for cut := 1; cut <= 36; cut++ {
		b := trainertest.Train(t, s, t.TempDir(), trainertest.Cut{MicroBatches: cut})
		t.Run(fmt.Sprint(cut), func(t *testing.T) { trainertest.Compare(t, straight, b) })
	}
}
