package trainer

import (
	"fmt"
	"math"
)

// Options are the training hyper-parameters (yaml section `training:`); key
// names follow HF TrainingArguments and axolotl.
type Options struct {
	LearningRate float64 `yaml:"learning_rate"` // peak learning rate
	NumEpochs    int     `yaml:"num_epochs"`    // passes over the training set (when MaxSteps is 0)
	MaxSteps     int     `yaml:"max_steps"`     // optimiser steps; 0 = derive from NumEpochs; wins when set

	// BatchSize is the total batch (examples per optimiser step), capped at
	// the number of training examples (the authors use 256, or 2N when smaller).
	BatchSize      int `yaml:"batch_size"`
	MicroBatchSize int `yaml:"micro_batch_size"` // examples per forward/backward pass
	// GradientAccumulationSteps, when > 0, sets the total batch to
	// GradientAccumulationSteps*MicroBatchSize (overriding BatchSize);
	// 0 derives it: ceil(BatchSize/MicroBatchSize) micro-batches per step.
	GradientAccumulationSteps int `yaml:"gradient_accumulation_steps"`

	// LRScheduler is "linear" (to 0 at the last step), "cosine" (half a
	// cosine wave to 0 at the last step, HF's get_cosine_schedule_with_warmup)
	// or "constant", each after the warm-up.
	LRScheduler string `yaml:"lr_scheduler"`
	WarmupSteps int    `yaml:"warmup_steps"` // linear warm-up from 0 over this many steps; wins over warmup_ratio when > 0
	// WarmupRatio, used when WarmupSteps is 0, sets the warm-up to
	// ceil(WarmupRatio * total steps), as HF TrainingArguments.
	WarmupRatio float64 `yaml:"warmup_ratio"`
	WeightDecay float64 `yaml:"weight_decay"` // AdamW decoupled weight decay
	AdamBeta1   float64 `yaml:"adam_beta1"`
	AdamBeta2   float64 `yaml:"adam_beta2"`
	AdamEpsilon float64 `yaml:"adam_epsilon"`
	// MaxGradNorm clips the global gradient norm; 0 = off. The default 1.0 is
	// HF TrainingArguments' default, which the authors' Trainer runs used.
	MaxGradNorm float64 `yaml:"max_grad_norm"`

	EvalSteps             int `yaml:"eval_steps"`              // evaluate every this many steps; 0 = every epoch
	SaveSteps             int `yaml:"save_steps"`              // checkpoint every this many steps; 0 = at every evaluation
	SaveTotalLimit        int `yaml:"save_total_limit"`        // keep the newest N checkpoints plus the best; 0 = all
	EarlyStoppingPatience int `yaml:"early_stopping_patience"` // evaluations without AUC improvement before stopping; 0 = off
	// LoggingSteps, off a terminal, logs a progress line every this many
	// steps; 0 logs one every 30 s. It also thins trainer_state.json's
	// log_history (0: every step). log.jsonl gets every step and a terminal
	// shows the bar only, whatever the value.
	LoggingSteps int `yaml:"logging_steps"`

	// OverwriteOutputDir lets a fresh run (no --resume, resume_from_checkpoint
	// "") start over in a training folder that holds an earlier run: the
	// earlier run's checkpoints, best/, final/, log.jsonl, trainer_state.json
	// and recorded batches are deleted first. Without it such a run is
	// refused. It has no effect on a resumed run, and it is not --force,
	// which resumes a checkpoint whose run-defining settings changed.
	OverwriteOutputDir bool `yaml:"overwrite_output_dir"`

	// ResumeFromCheckpoint is "" (fresh run; refuses a folder that already
	// has checkpoints), "auto" (newest verified checkpoint in the output
	// folder, else fresh) or the path of a checkpoint folder.
	ResumeFromCheckpoint string `yaml:"resume_from_checkpoint"`
	SequenceLen          int    `yaml:"sequence_len"` // longest allowed training sequence (tokens)

	// RecordBatches writes, in the output folder, batches.json (the
	// training examples and every step's micro-batches, in the format of
	// scripts/hf_peft.py curve) and lora_init.safetensors (the adapter
	// before the first update), so that another trainer can replay the run.
	// It does not define the run: it may change across a resume.
	RecordBatches bool `yaml:"record_batches"`
}

// DefaultOptions returns the ReLLa few-shot settings (RELLA.md section 5).
func DefaultOptions() Options {
	return Options{
		LearningRate:   1e-3,
		NumEpochs:      5,
		BatchSize:      256,
		MicroBatchSize: 8,
		LRScheduler:    "linear",
		AdamBeta1:      0.9,
		AdamBeta2:      0.999,
		AdamEpsilon:    1e-8,
		MaxGradNorm:    1.0,
		SaveTotalLimit: 3,
		LoggingSteps:   0,
		SequenceLen:    2048,
	}
}

// Validate reports the first invalid option, naming its dotted yaml key.
func (o Options) Validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !(o.LearningRate > 0) || !finite(o.LearningRate):
		return fmt.Errorf("training.learning_rate: must be positive, got %v", o.LearningRate)
	case o.MaxSteps < 0:
		return fmt.Errorf("training.max_steps: must be at least 0, got %d", o.MaxSteps)
	case o.MaxSteps == 0 && o.NumEpochs < 1:
		return fmt.Errorf("training.num_epochs: must be at least 1 when max_steps is 0, got %d", o.NumEpochs)
	case o.MicroBatchSize < 1:
		return fmt.Errorf("training.micro_batch_size: must be at least 1, got %d", o.MicroBatchSize)
	case o.GradientAccumulationSteps < 0:
		return fmt.Errorf("training.gradient_accumulation_steps: must be at least 0, got %d", o.GradientAccumulationSteps)
	case o.GradientAccumulationSteps == 0 && o.BatchSize < 1:
		return fmt.Errorf("training.batch_size: must be at least 1, got %d", o.BatchSize)
	case o.LRScheduler != "linear" && o.LRScheduler != "cosine" && o.LRScheduler != "constant":
		return fmt.Errorf("training.lr_scheduler: %q is not one of linear, cosine, constant", o.LRScheduler)
	case o.WarmupSteps < 0:
		return fmt.Errorf("training.warmup_steps: must be at least 0, got %d", o.WarmupSteps)
	case !(o.WarmupRatio >= 0 && o.WarmupRatio <= 1):
		return fmt.Errorf("training.warmup_ratio: must be in [0, 1], got %v", o.WarmupRatio)
	case !(o.WeightDecay >= 0) || !finite(o.WeightDecay):
		return fmt.Errorf("training.weight_decay: must be at least 0, got %v", o.WeightDecay)
	case !(o.AdamBeta1 >= 0 && o.AdamBeta1 < 1):
		return fmt.Errorf("training.adam_beta1: must be in [0, 1), got %v", o.AdamBeta1)
	case !(o.AdamBeta2 >= 0 && o.AdamBeta2 < 1):
		return fmt.Errorf("training.adam_beta2: must be in [0, 1), got %v", o.AdamBeta2)
	case !(o.AdamEpsilon > 0) || !finite(o.AdamEpsilon):
		return fmt.Errorf("training.adam_epsilon: must be positive, got %v", o.AdamEpsilon)
	case !(o.MaxGradNorm >= 0) || !finite(o.MaxGradNorm):
		return fmt.Errorf("training.max_grad_norm: must be at least 0 (0 = off), got %v", o.MaxGradNorm)
	case o.EvalSteps < 0:
		return fmt.Errorf("training.eval_steps: must be at least 0, got %d", o.EvalSteps)
	case o.SaveSteps < 0:
		return fmt.Errorf("training.save_steps: must be at least 0, got %d", o.SaveSteps)
	case o.SaveTotalLimit < 0:
		return fmt.Errorf("training.save_total_limit: must be at least 0, got %d", o.SaveTotalLimit)
	case o.EarlyStoppingPatience < 0:
		return fmt.Errorf("training.early_stopping_patience: must be at least 0, got %d", o.EarlyStoppingPatience)
	case o.LoggingSteps < 0:
		return fmt.Errorf("training.logging_steps: must be at least 0, got %d", o.LoggingSteps)
	case o.SequenceLen < 1:
		return fmt.Errorf("training.sequence_len: must be at least 1, got %d", o.SequenceLen)
	}
	return nil
}

// Plan is how a run walks the data, derived from Options and the number of
// training examples.
//
// Every epoch is a fresh seeded permutation of the examples. Optimiser step s
// (0-based) lives in epoch s / StepsPerEpoch and takes the Batch examples at
// positions (s mod StepsPerEpoch)*Batch ... of that epoch's order, split into
// Accum micro-batches of MicroBatch examples (the last one smaller when
// Batch is not a multiple). The N mod Batch examples left at the end of an
// epoch's order are not used in that epoch (different ones each epoch): the
// authors' step count floor(N/Batch)*epochs has no room for a partial batch.
type Plan struct {
	N               int // training examples
	Batch           int // examples per optimiser step
	MicroBatch      int // examples per LossGrad call
	Accum           int // micro-batches per optimiser step
	StepsPerEpoch   int // floor(N / Batch)
	TotalSteps      int // MaxSteps, or max(floor(N/Batch)*NumEpochs, NumEpochs)
	Epochs          int // epochs touched: ceil(TotalSteps / StepsPerEpoch)
	DroppedPerEpoch int // N mod Batch
	Warmup          int // warm-up steps: WarmupSteps, or ceil(WarmupRatio * TotalSteps) when it is 0
}

// Plan derives the data walk for n training examples.
func (o Options) Plan(n int) (Plan, error) {
	if err := o.Validate(); err != nil {
		return Plan{}, err
	}
	if n < 1 {
		return Plan{}, fmt.Errorf("trainer: no training examples")
	}
	b := o.BatchSize
	if o.GradientAccumulationSteps > 0 {
		b = o.GradientAccumulationSteps * o.MicroBatchSize
	}
	b = min(b, n)
	mb := min(o.MicroBatchSize, b)
	p := Plan{N: n, Batch: b, MicroBatch: mb, Accum: (b + mb - 1) / mb, StepsPerEpoch: n / b, DroppedPerEpoch: n % b}
	if o.MaxSteps > 0 {
		p.TotalSteps = o.MaxSteps
	} else {
		p.TotalSteps = max(p.StepsPerEpoch*o.NumEpochs, o.NumEpochs)
	}
	p.Epochs = (p.TotalSteps + p.StepsPerEpoch - 1) / p.StepsPerEpoch
	p.Warmup = o.Warmup(p.TotalSteps)
	return p, nil
}

// window returns the order positions [lo, hi) of micro-batch k of step s.
func (p Plan) window(s, k int) (epoch, lo, hi int) {
	epoch = s / p.StepsPerEpoch
	base := (s % p.StepsPerEpoch) * p.Batch
	lo = base + k*p.MicroBatch
	hi = min(lo+p.MicroBatch, base+p.Batch)
	return epoch, lo, hi
}

// Warmup returns the warm-up steps of a run of total steps, as HF's
// TrainingArguments.get_warmup_steps: WarmupSteps when > 0, else
// ceil(WarmupRatio * total).
func (o Options) Warmup(total int) int {
	if o.WarmupSteps > 0 {
		return o.WarmupSteps
	}
	return int(math.Ceil(o.WarmupRatio * float64(total)))
}

// LR returns the learning rate of optimiser step s (0-based) of total, as
// HF's get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup
// (num_cycles 0.5) and get_constant_schedule_with_warmup: base*s/warmup
// during warm-up, then, with progress p = (s-warmup)/(total-warmup), for
// "linear" base*(1-p), for "cosine" base*0.5*(1+cos(pi*p)), for "constant"
// base. It is a pure function of the step, so a resumed run continues the
// schedule exactly.
func LR(scheduler string, base float64, s, total, warmup int) float64 {
	if s < warmup {
		return base * float64(s) / float64(max(1, warmup))
	}
	switch scheduler {
	case "constant":
		return base
	case "cosine":
		p := float64(s-warmup) / float64(max(1, total-warmup))
		return base * max(0, 0.5*(1+math.Cos(math.Pi*p)))
	}
	return base * max(0, float64(total-s)/float64(max(1, total-warmup)))
}
