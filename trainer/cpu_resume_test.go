package trainer_test

import (
	"testing"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

// TestResumeExactCPUEngine runs the central resume test with the real
// Gorgonia engine on the stories260K fixture (5 layers, LoRA rank 4 on
// q_proj and v_proj): cut mid-window, at a window boundary and during an
// evaluation, each resumed with a freshly loaded engine, and checks that
// training moved every adapter tensor.
func TestResumeExactCPUEngine(t *testing.T) {
	dir := testenv.Shared(t, "fixtures/stories260K")
	lo := lora.Options{R: 4, Alpha: 8, Dropout: 0.05, TargetModules: []string{"q_proj", "v_proj"}}
	newEng := func(t testing.TB) engine.Trainer {
		m, err := model.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		c := m.Config
		ts, err := lora.Targets(lo, c.NumHiddenLayers, c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.IntermediateSize)
		if err != nil {
			t.Fatal(err)
		}
		ps := lora.Init(lo, ts, 3)
		for _, p := range ps { // a nonzero B, so that A's gradient is nonzero from step 1
			for i := range p.Value {
				if p.Value[i] == 0 {
					p.Value[i] = 0.01 * float32(i%5-2)
				}
			}
		}
		e, err := cpu.New(m, cpu.Options{LoRA: &cpu.LoRA{Scale: lo.Scale(), Dropout: lo.Dropout, Params: ps}})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	// Token ids 0 and 1 serve as the answers (the fixture has no tokenizer).
	train, _, _ := trainertest.Data(14, 512, 5)
	_, vp, vl := trainertest.Data(16, 512, 6)
	o := trainer.DefaultOptions()
	o.LearningRate = 0.01
	o.NumEpochs = 3
	o.BatchSize = 6
	o.MicroBatchSize = 2
	o.EvalSteps = 2
	s := trainertest.Setup{NewEngine: newEng, Train: train, Options: o, LoRA: lo, Seed: 9,
		Evaluate: func(eng engine.Trainer) trainer.Evaluator {
			return trainertest.Evaluator(eng, vp, vl, trainertest.No, trainertest.Yes)
		}}
	trainertest.ResumeExact(t, s, trainertest.Cut{MicroBatches: 5}, trainertest.Cut{MicroBatches: 10}, trainertest.Cut{Eval: 3})

	out := trainertest.Train(t, s, t.TempDir())
	start := newEng(t).Params()
	for i, p := range out.Params {
		moved := false
		for j := range p.Value {
			moved = moved || p.Value[j] != start[i].Value[j]
		}
		if !moved {
			t.Errorf("%s did not change in training", p.Name)
		}
	}
}
