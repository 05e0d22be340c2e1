package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/safetensors"
)

// Files written with Options.RecordBatches.
const (
	// BatchesFile holds the training examples and the micro-batches of every
	// optimiser step, as scripts/hf_peft.py curve reads them.
	BatchesFile = "batches.json"
	// LoRAInitFile is the adapter before the first update (F32, PEFT tensor
	// names), for hf_peft.py's --lora-init.
	LoRAInitFile = "lora_init.safetensors"
)

// PriorityRecord is the priority of the hook that writes BatchesFile and
// LoRAInitFile.
const PriorityRecord = 5

// Batches is the content of BatchesFile: Examples are the training examples
// (rella's label convention: Labels[t] is the target of position t, or
// engine.IgnoreIndex), and Steps[s][k] lists the indices into Examples of
// micro-batch k of optimiser step s+1, in the order the engine saw them.
// The other fields describe the run (hf_peft.py curve reads only Examples
// and Steps; its schedule's --total-steps must be TotalSteps when Steps is
// shorter, after early stopping or an interruption).
type Batches struct {
	Examples []BatchExample `json:"examples"`
	Steps    [][][]int      `json:"steps"`

	Seed         uint64  `json:"seed"`
	TotalSteps   int     `json:"total_steps"`
	Batch        int     `json:"batch"`
	MicroBatch   int     `json:"micro_batch"`
	Accum        int     `json:"accum"`
	LearningRate float64 `json:"learning_rate"`
	LRScheduler  string  `json:"lr_scheduler"`
	WarmupSteps  int     `json:"warmup_steps"`
	WeightDecay  float64 `json:"weight_decay"`
	AdamBeta1    float64 `json:"adam_beta1"`
	AdamBeta2    float64 `json:"adam_beta2"`
	AdamEpsilon  float64 `json:"adam_epsilon"`
	MaxGradNorm  float64 `json:"max_grad_norm"`
}

// BatchExample is one training example of BatchesFile.
type BatchExample struct {
	Tokens []int `json:"tokens"`
	Labels []int `json:"labels"`
}

// StepBatches returns the micro-batches (indices into the training
// examples) of the first steps optimiser steps of plan p with seed, as the
// trainer feeds them to the engine.
func StepBatches(p Plan, seed uint64, steps int) [][][]int {
	out := make([][][]int, 0, steps)
	orderEp, order := -1, []int(nil)
	for s := 0; s < steps; s++ {
		micros := make([][]int, 0, p.Accum)
		for k := 0; k < p.Accum; k++ {
			epoch, lo, hi := p.window(s, k)
			if epoch != orderEp {
				order, orderEp = EpochOrder(seed, epoch, p.N), epoch
			}
			micros = append(micros, append([]int(nil), order[lo:hi]...))
		}
		out = append(out, micros)
	}
	return out
}

// recordHook writes BatchesFile (the whole plan at the start, the steps
// actually run at the end) and, before the first update, LoRAInitFile.
// Both derive from the seed, the plan and the adapter at step 0, so an
// interrupted and resumed run writes the same files as an uninterrupted one.
func (l *Loop) recordHook() Hook {
	started := false
	write := func(l *Loop, steps int) error {
		j, o := l.Job, l.Job.Options
		b := Batches{Examples: make([]BatchExample, len(j.Train)), Steps: StepBatches(l.Plan, l.State.Seed, steps),
			Seed: l.State.Seed, TotalSteps: l.Plan.TotalSteps, Batch: l.Plan.Batch, MicroBatch: l.Plan.MicroBatch, Accum: l.Plan.Accum,
			LearningRate: o.LearningRate, LRScheduler: o.LRScheduler, WarmupSteps: l.Plan.Warmup, WeightDecay: o.WeightDecay,
			AdamBeta1: o.AdamBeta1, AdamBeta2: o.AdamBeta2, AdamEpsilon: o.AdamEpsilon, MaxGradNorm: o.MaxGradNorm}
		for i, e := range j.Train {
			b.Examples[i] = BatchExample{Tokens: e.Tokens, Labels: e.Labels}
		}
		path := filepath.Join(j.Dir, BatchesFile)
		if err := safetensors.WriteAtomic(path, func(w io.Writer) error { return json.NewEncoder(w).Encode(b) }); err != nil {
			return fmt.Errorf("trainer: %s: %w", path, err)
		}
		return nil
	}
	return Hook{
		Name: "record-batches", Priority: PriorityRecord,
		OnStart: func(ctx context.Context, l *Loop) error {
			path := filepath.Join(l.Job.Dir, LoRAInitFile)
			if l.State.Step == 0 {
				// No update yet (at most accumulated gradients): the
				// parameters are the starting adapter.
				if err := writeParams(path, l.params); err != nil {
					return err
				}
			} else if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
				l.Log.Warn("trainer: training.record_batches: resuming after step 0 without "+LoRAInitFile+"; the starting adapter is unknown", "dir", l.Job.Dir)
			}
			if err := write(l, l.Plan.TotalSteps); err != nil {
				return err
			}
			started = true
			return nil
		},
		OnEnd: func(l *Loop, _ error) {
			if !started || l.State.Step >= l.Plan.TotalSteps {
				return
			}
			if err := write(l, l.State.Step); err != nil {
				l.Log.Warn("trainer: training.record_batches: rewriting the steps run failed", "err", err)
			}
		},
	}
}

// writeParams saves params as F32 tensors with their (PEFT) names.
func writeParams(path string, params []*engine.Param) error {
	ts := make([]safetensors.Tensor, len(params))
	for i, p := range params {
		ts[i] = safetensors.F32(p.Name, p.Shape, p.Value)
	}
	if err := safetensors.Write(path, ts, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("trainer: %s: %w", path, err)
	}
	return nil
}
