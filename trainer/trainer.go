// Package trainer fine-tunes LoRA adapters through an engine.Trainer: a
// small loop (micro-batches, gradient accumulation, AdamW, clipping, LR
// schedule) with everything else (JSON Lines log, progress bar, evaluation,
// best-adapter keeping, early stopping, checkpoints) done by prioritised
// hooks, as in gomlx's train loop.
//
// Runs are reproducible and resume exactly: the data order of each epoch,
// the dropout seed of each micro-batch and the learning rate of each step
// are pure functions of (seed, epoch / step / micro-batch), and a checkpoint
// holds everything else, including the gradient sums of a half-accumulated
// window, so that an interrupted run resumed from its checkpoint ends with
// the same bits as an uninterrupted one.
//
// The output folder holds checkpoint-<step>[-m<k>] folders (package
// checkpoints), best/ (adapter with the best validation AUC), final/ (the
// adapter after the last step), log.jsonl and trainer_state.json (HF-style:
// step, best metric and checkpoint, log history); with training.record_batches
// also batches.json and lora_init.safetensors (the data order and starting
// adapter, for replaying the run in scripts/hf_peft.py curve).
package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rella-project/rella/checkpoints"
	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/internal/progress"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/safetensors"
)

// ErrInterrupted is wrapped by Run's error when the context was cancelled:
// the run stopped after the current micro-batch and saved a checkpoint to
// resume from.
var ErrInterrupted = errors.New("training interrupted")

// ErrExistingRun is wrapped by Run's error when a fresh run
// (resume_from_checkpoint "") finds checkpoints in its output folder.
var ErrExistingRun = errors.New("the output folder holds an earlier run")

// Evaluator scores the current adapter on the validation split.
type Evaluator func(ctx context.Context) (metrics.Result, error)

// Job is one training run.
type Job struct {
	Engine  engine.Trainer
	Train   []engine.Example
	Options Options

	LoRA      lora.Options // written into every adapter's adapter_config.json
	BaseModel string       // base_model_name_or_path of the adapters
	Seed      uint64       // data order and dropout (top-level config key `seed`)

	Dir    string // output folder
	Config []byte // the run's configuration, copied into every checkpoint

	// Fingerprint holds caller-defined settings that define the run (model
	// path, prompt settings...). With the built-in ones (a hash of the
	// training examples "train_examples", n_train, the seed, the run-defining
	// Options and LoRA options, the engine's tensor names and shapes) they
	// must equal the checkpoint's on resume, unless Force is set. A caller
	// key equal to a built-in one is stored as "job.<key>".
	Fingerprint map[string]string
	Force       bool

	// LossScaling turns on dynamic loss scaling (fp16 training); the
	// engine must then be an engine.LossScaler.
	LossScaling LossScaling

	Evaluate Evaluator    // nil: no evaluation, no best adapter, no early stopping
	Log      *slog.Logger // nil: discard
	Hooks    []Hook       // extra hooks
	// Progress is where progress goes: a *progress.Reporter (shared with
	// the evaluator's scoring, so that its bar nests in the training bar),
	// or a writer, which gets a bar when it is a terminal and otherwise
	// leaves progress to periodic Log lines; nil is os.Stderr.
	Progress io.Writer

	// Comm makes this process one rank of a data-parallel run (see
	// parallel.go): the ranks split each step's micro-batches, all-reduce
	// the gradients once per step, and only rank 0 runs the hooks and
	// writes files. nil or distributed.Single is a single process,
	// unchanged; any other communicator, even of one rank, takes the
	// data-parallel path (checkpoints at step boundaries only).
	Comm distributed.Communicator
	// ReferenceRanks, for a single process, gives the world size whose
	// reduction step s reproduces: the window is accumulated as that many
	// ranks' partial sums added in rank order, bit for bit what a
	// data-parallel run of that size computes (for checking one). nil, or
	// a value <= 1, is the plain sequential accumulation.
	ReferenceRanks func(step int) int
}

// State is everything about a run that is not in the adapter, the optimiser
// moments or the partial gradients; it is saved as state.json.
type State struct {
	Version  int `json:"version"`
	Step     int `json:"step"`     // optimiser steps done
	Micro    int `json:"micro"`    // micro-batches accumulated toward step Step+1
	Epoch    int `json:"epoch"`    // epoch of the next micro-batch
	Position int `json:"position"` // index, in that epoch's order, of the next example

	TotalSteps    int `json:"total_steps"`
	StepsPerEpoch int `json:"steps_per_epoch"`

	// Partial accumulation window (when Micro > 0).
	WindowLossSum     float64 `json:"window_loss_sum"`
	WindowTokens      int     `json:"window_tokens"`
	WindowInputTokens int     `json:"window_input_tokens"`

	Scheduler string  `json:"lr_scheduler"`
	LR        float64 `json:"lr"`   // learning rate of the last step
	Loss      float64 `json:"loss"` // loss of the last step
	AdamStep  int     `json:"adam_step"`

	// Dynamic loss scaling (Job.LossScaling): the scale of the next
	// window, the finite steps since the last change, and the steps
	// skipped because of an inf/NaN gradient.
	LossScale     float64 `json:"loss_scale,omitempty"`
	LossScaleGood int     `json:"loss_scale_growth_tracker,omitempty"`
	SkippedSteps  int     `json:"skipped_steps,omitempty"`

	Seed uint64 `json:"seed"`
	RNG  string `json:"rng"` // how data order and dropout seeds derive from Seed

	Evals        int     `json:"evals"`
	HasBest      bool    `json:"has_best"`
	BestAUC      float64 `json:"best_auc"`
	BestStep     int     `json:"best_step"`
	BadEvals     int     `json:"bad_evals"` // evaluations since the last improvement
	LastEvalStep int     `json:"last_eval_step"`
	PendingEval  bool    `json:"pending_eval"` // interrupted during the evaluation at Step
	Stopped      string  `json:"stopped,omitempty"`

	Fingerprint map[string]string `json:"fingerprint"`
}

const rngDoc = "epoch order: Fisher-Yates over PCG(seed, epoch) with Lemire bounded draws; dropout seed of (step, micro): splitmix64 chain of (seed, step, micro)"

// Summary reports a finished run.
type Summary struct {
	Steps, TotalSteps int
	Loss              float64 // loss of the last step
	HasBest           bool
	BestAUC           float64
	BestStep          int
	Stopped           string // why training ended before TotalSteps ("" when it did not)
	ResumedFrom       string // checkpoint folder, "" for a fresh run
	FinalAdapter      string // Dir/final
	BestAdapter       string // Dir/best, "" without evaluations
	LastCheckpoint    string
}

// StepInfo describes a finished optimiser step.
type StepInfo struct {
	Step     int // steps done, 1-based
	Epoch    float64
	Loss     float64 // summed loss / labelled tokens of the window
	LR       float64
	GradNorm float64 // before clipping (unscaled); NaN or inf on a skipped step
	// With loss scaling: the scale the window ran with, and whether its
	// gradients overflowed, so that the optimiser step was skipped.
	LossScale    float64
	Skipped      bool
	Tokens       int     // labelled tokens in the window
	InputTokens  int     // all tokens in the window
	TokensPerSec float64 // input tokens per second
	Duration     time.Duration
}

// EvalInfo describes a finished evaluation.
type EvalInfo struct {
	Step     int
	Epoch    float64
	Result   metrics.Result
	Improved bool // AUC beat the best so far
}

// Hook is a named set of callbacks; hooks run in ascending Priority (ties
// in the order given). Any callback may be nil. An error from OnStart,
// OnStep or OnEval ends the run with that error. Hooks that change State
// must run before PriorityCheckpoint, or a resume would not see the change.
type Hook struct {
	Name     string
	Priority int
	OnStart  func(ctx context.Context, l *Loop) error
	OnStep   func(ctx context.Context, l *Loop, s StepInfo) error
	OnEval   func(ctx context.Context, l *Loop, e EvalInfo) error
	OnEnd    func(l *Loop, runErr error)
}

// Priorities of the built-in hooks.
const (
	PriorityLog        = 10
	PriorityProgress   = 20
	PriorityBest       = 30
	PriorityEarlyStop  = 40
	PriorityEvaluate   = 50
	PriorityCheckpoint = 100
)

// Loop is the running state handed to hooks.
type Loop struct {
	Job   *Job
	Plan  Plan
	State *State
	Log   *slog.Logger

	params    []*engine.Param
	adam      *AdamW
	hooks     []Hook
	order     []int
	orderEp   int
	lastSaved string // name of the checkpoint that holds the current state, "" when none does
	lastCkpt  string
	rep       *progress.Reporter
	history   []map[string]any // trainer_state.json's log_history
	ref       refPartial       // Job.ReferenceRanks' partial sums
	packed    []float32        // the gradients packed for the all-reduce
}

// Stop ends the run after the current step's hooks; the reason is kept in
// the state (and so in later checkpoints), so a resumed run stays stopped.
func (l *Loop) Stop(reason string) { l.State.Stopped, l.lastSaved = reason, "" }

// Params returns the engine's trainable tensors.
func (l *Loop) Params() []*engine.Param { return l.params }

// Run trains j.Engine's adapter. On context cancellation it finishes the
// current micro-batch, saves a checkpoint and returns an error wrapping
// ErrInterrupted.
func Run(ctx context.Context, j Job) (*Summary, error) {
	log := j.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var w io.Writer = os.Stderr
	if j.Progress != nil {
		w = j.Progress
	}
	rep := progress.For(w, log)
	log = rep.Logger(log) // on a terminal, log records clear the bar first
	o := j.Options
	plan, err := o.Plan(len(j.Train))
	if err != nil {
		return nil, err
	}
	if err := j.LoRA.Validate(); err != nil {
		return nil, err
	}
	if err := checkExamples(j.Train, o.SequenceLen); err != nil {
		return nil, err
	}
	if j.Dir == "" {
		return nil, fmt.Errorf("trainer: no output folder")
	}
	if err := os.MkdirAll(j.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	l := &Loop{Job: &j, Plan: plan, Log: log, params: j.Engine.Params(), orderEp: -1, rep: rep}
	if len(l.params) == 0 {
		return nil, fmt.Errorf("trainer: the engine has no trainable tensors")
	}
	for _, p := range l.params {
		if len(p.Grad) != len(p.Value) {
			return nil, fmt.Errorf("trainer: tensor %s: gradient has %d values, tensor %d", p.Name, len(p.Grad), len(p.Value))
		}
	}
	if err := j.LossScaling.Validate(); err != nil {
		return nil, err
	}
	if j.LossScaling.Enabled {
		if _, ok := j.Engine.(engine.LossScaler); !ok {
			return nil, fmt.Errorf("trainer: loss scaling (fp16 training) needs an engine that scales the loss gradient; %T does not", j.Engine)
		}
	}
	if j.Evaluate == nil && o.EarlyStoppingPatience > 0 {
		log.Warn("trainer: training.early_stopping_patience is set but there is no evaluator; early stopping is off")
	}
	fp := l.fingerprint()
	l.adam = NewAdamW(l.params, o.AdamBeta1, o.AdamBeta2, o.AdamEpsilon, o.WeightDecay)
	resumed, err := l.restore(fp)
	if err != nil {
		return nil, err
	}
	if err := l.checkRanks(ctx); err != nil {
		return nil, err
	}
	if l.lead() {
		if err := trimLog(filepath.Join(j.Dir, LogFile), l.State.Step); err != nil {
			return nil, err
		}
		l.hooks = append(l.builtinHooks(), j.Hooks...)
	}
	sort.SliceStable(l.hooks, func(a, b int) bool { return l.hooks[a].Priority < l.hooks[b].Priority })

	sum, runErr := l.run(ctx, resumed)
	for _, h := range l.hooks {
		if h.OnEnd != nil {
			h.OnEnd(l, runErr)
		}
	}
	if runErr == nil && l.lead() { // after the hooks, so below the final bar
		st := l.State
		args := []any{"steps", st.Step, "loss", progress.Fixed(st.Loss, 4)}
		if st.HasBest {
			args = append(args, "best_auc", progress.Fixed(st.BestAUC, 4), "best_step", st.BestStep)
		}
		if st.Stopped != "" {
			args = append(args, "stopped", st.Stopped)
		}
		log.Info("trainer: done", args...)
	}
	return sum, runErr
}

func (l *Loop) run(ctx context.Context, resumed string) (*Summary, error) {
	for _, h := range l.hooks {
		if h.OnStart != nil {
			if err := h.OnStart(ctx, l); err != nil {
				return nil, fmt.Errorf("trainer: hook %s: %w", h.Name, err)
			}
		}
	}
	st := l.State
	if resumed != "" {
		l.Log.Info("trainer: resuming", "checkpoint", resumed, "step", st.Step, "micro", st.Micro, "epoch", st.Epoch)
	}
	if st.PendingEval && !l.lead() {
		st.PendingEval = false // rank 0 evaluates
	}
	if st.PendingEval {
		if l.dp() {
			ctx = context.WithoutCancel(ctx) // stops are decided together, between steps
		}
		if err := l.evaluate(ctx); err != nil {
			return nil, err
		}
		if l.saveDue(st.Step) {
			if _, err := l.SaveCheckpoint(); err != nil {
				return nil, err
			}
		}
	}
	for st.Step < l.Plan.TotalSteps && (st.Stopped == "" || l.dp()) {
		if l.dp() {
			interrupt, stopped, err := l.control(ctx)
			if err != nil {
				return nil, err
			}
			if interrupt {
				return nil, l.interrupt(ctx)
			}
			if stopped {
				if st.Stopped == "" {
					st.Stopped = "stopped by rank 0"
				}
				break
			}
			if err := l.step(context.WithoutCancel(ctx)); err != nil {
				return nil, err
			}
			continue
		}
		if err := l.step(ctx); err != nil {
			return nil, err
		}
	}
	return l.finish(resumed)
}

// step runs the remaining micro-batches of one optimiser step, the update
// and the step hooks.
func (l *Loop) step(ctx context.Context) error {
	st, p, j := l.State, l.Plan, l.Job
	s := st.Step
	start := time.Now()
	ls := j.LossScaling
	if ls.Enabled {
		j.Engine.(engine.LossScaler).SetLossScale(st.LossScale)
	}
	k0, k1 := l.microRange(st.Micro)
	for k := k0; k < k1; k++ {
		l.referenceBoundary(s, k)
		epoch, lo, hi := p.window(s, k)
		st.Epoch, st.Position = epoch, lo
		if ctx.Err() != nil {
			return l.interrupt(ctx)
		}
		order := l.epochOrder(epoch)
		batch := make([]engine.Example, 0, hi-lo)
		for _, i := range order[lo:hi] {
			batch = append(batch, j.Train[i])
			st.WindowInputTokens += len(j.Train[i].Tokens)
		}
		// The micro-batch always completes: a cancelled context is
		// honoured between micro-batches, where the state is saveable.
		ls, nt, err := j.Engine.LossGrad(context.WithoutCancel(ctx), batch, DropoutSeed(st.Seed, s, k))
		if err != nil {
			return fmt.Errorf("trainer: step %d, micro-batch %d: %w", s+1, k, err)
		}
		if math.IsNaN(ls) || math.IsInf(ls, 0) {
			return fmt.Errorf("trainer: step %d, micro-batch %d: loss is %v", s+1, k, ls)
		}
		st.WindowLossSum += ls
		st.WindowTokens += nt
		st.Micro = k + 1
		l.lastSaved = "" // the state moved on
		st.Epoch, st.Position = epoch, hi
	}
	if err := l.Reduce(ctx); err != nil {
		return err
	}
	if st.WindowTokens == 0 {
		return fmt.Errorf("trainer: step %d: no labelled tokens in the batch", s+1)
	}
	loss := st.WindowLossSum / float64(st.WindowTokens)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return fmt.Errorf("trainer: step %d: loss is %v", s+1, loss)
	}
	skipped := false
	scale := st.LossScale
	if ls.Enabled {
		// Unscale first (a power of two: exact), so that the overflow
		// check, the token normalisation and clipping see true gradients.
		scaleGrads(l.params, 1/scale)
		skipped = !allFinite(l.params)
	}
	lr := LR(j.Options.LRScheduler, j.Options.LearningRate, s, p.TotalSteps, p.Warmup)
	var norm float64
	if skipped {
		norm = math.NaN()
		st.SkippedSteps++
		l.Log.Warn("trainer: inf/NaN in the LoRA gradients; optimiser step skipped, loss scale backed off",
			"step", s+1, "loss_scale", scale, "new_loss_scale", scale*ls.Backoff, "skipped_steps", st.SkippedSteps)
	} else {
		scaleGrads(l.params, 1/float64(st.WindowTokens))
		norm = gradNorm(l.params)
		if math.IsNaN(norm) || math.IsInf(norm, 0) {
			return fmt.Errorf("trainer: step %d: gradient norm is %v", s+1, norm)
		}
		if c := clipCoef(norm, j.Options.MaxGradNorm); c < 1 {
			scaleGrads(l.params, c)
		}
		l.adam.Step(l.params, lr)
	}
	if ls.Enabled {
		ls.update(st, skipped)
	}
	zeroGrads(l.params)
	info := StepInfo{Step: s + 1, Epoch: float64(s+1) / float64(p.StepsPerEpoch), Loss: loss, LR: lr, GradNorm: norm,
		Tokens: st.WindowTokens, InputTokens: st.WindowInputTokens, Duration: time.Since(start), Skipped: skipped}
	if ls.Enabled {
		info.LossScale = scale
	}
	if sec := info.Duration.Seconds(); sec > 0 {
		info.TokensPerSec = float64(info.InputTokens) / sec
	}
	st.Step, st.Micro = s+1, 0
	st.WindowLossSum, st.WindowTokens, st.WindowInputTokens = 0, 0, 0
	st.LR, st.Loss, st.AdamStep = lr, loss, l.adam.T
	st.Epoch, st.Position = st.Step/p.StepsPerEpoch, (st.Step%p.StepsPerEpoch)*p.Batch
	for _, h := range l.hooks {
		if h.OnStep != nil {
			if err := h.OnStep(ctx, l, info); err != nil {
				if errors.Is(err, ErrInterrupted) {
					return err
				}
				return fmt.Errorf("trainer: step %d: hook %s: %w", st.Step, h.Name, err)
			}
		}
	}
	return nil
}

// interrupt saves a checkpoint of the current state and reports ErrInterrupted.
func (l *Loop) interrupt(ctx context.Context) error {
	dir, err := l.SaveCheckpoint()
	if err != nil {
		return fmt.Errorf("trainer: interrupted at step %d, micro-batch %d, and the checkpoint failed: %w", l.State.Step, l.State.Micro, err)
	}
	l.Log.Info("trainer: interrupted; checkpoint saved", "dir", dir, "step", l.State.Step, "micro", l.State.Micro)
	cause := context.Cause(ctx)
	if cause == nil {
		cause = errStoppedElsewhere
	}
	if !l.lead() {
		return fmt.Errorf("%w at step %d: rank 0 saved the checkpoint (%v)", ErrInterrupted, l.State.Step, cause)
	}
	return fmt.Errorf("%w at step %d (micro-batch %d): checkpoint %s (%v)", ErrInterrupted, l.State.Step, l.State.Micro, dir, cause)
}

func (l *Loop) epochOrder(epoch int) []int {
	if l.orderEp != epoch {
		l.order, l.orderEp = EpochOrder(l.State.Seed, epoch, l.Plan.N), epoch
	}
	return l.order
}

// evalDue reports whether an evaluation follows step s (1-based count).
func (l *Loop) evalDue(s int) bool {
	if l.Job.Evaluate == nil {
		return false
	}
	if s == l.Plan.TotalSteps {
		return true
	}
	if e := l.Job.Options.EvalSteps; e > 0 {
		return s%e == 0
	}
	return s%l.Plan.StepsPerEpoch == 0
}

// saveDue reports whether a checkpoint follows step s.
func (l *Loop) saveDue(s int) bool {
	if s == l.Plan.TotalSteps {
		return true
	}
	if v := l.Job.Options.SaveSteps; v > 0 {
		return s%v == 0
	}
	if l.Job.Evaluate == nil {
		return s%l.Plan.StepsPerEpoch == 0
	}
	return l.evalDue(s)
}

// evaluate runs the evaluator and the OnEval hooks. A cancelled context
// during evaluation saves a checkpoint marked to redo it.
func (l *Loop) evaluate(ctx context.Context) error {
	st := l.State
	st.PendingEval = true
	r, err := l.Job.Evaluate(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return l.interrupt(ctx)
		}
		return fmt.Errorf("trainer: evaluation after step %d: %w", st.Step, err)
	}
	st.PendingEval = false
	l.lastSaved = ""
	st.Evals++
	st.LastEvalStep = st.Step
	info := EvalInfo{Step: st.Step, Epoch: float64(st.Step) / float64(l.Plan.StepsPerEpoch), Result: r}
	info.Improved = !math.IsNaN(r.AUC) && (!st.HasBest || r.AUC > st.BestAUC)
	for _, h := range l.hooks {
		if h.OnEval != nil {
			if err := h.OnEval(ctx, l, info); err != nil {
				return fmt.Errorf("trainer: evaluation after step %d: hook %s: %w", st.Step, h.Name, err)
			}
		}
	}
	return nil
}

// SaveCheckpoint saves the current state under the output folder (once per
// (step, micro)) and prunes old checkpoints.
func (l *Loop) SaveCheckpoint() (string, error) {
	st := l.State
	if !l.lead() {
		return "", nil // rank 0 writes the checkpoints
	}
	name := checkpoints.Name(st.Step, st.Micro)
	if l.lastSaved == name {
		return l.lastCkpt, nil
	}
	var tensors []safetensors.Tensor
	for i, p := range l.params {
		tensors = append(tensors,
			safetensors.F32("adamw.exp_avg."+p.Name, p.Shape, l.adam.M[i]),
			safetensors.F32("adamw.exp_avg_sq."+p.Name, p.Shape, l.adam.V[i]))
		if st.Micro > 0 {
			tensors = append(tensors, safetensors.F32("grad."+p.Name, p.Shape, p.Grad))
		}
	}
	st.AdamStep = l.adam.T
	ts, err := l.trainerState()
	if err != nil {
		return "", err
	}
	dir, err := checkpoints.Save(l.Job.Dir, checkpoints.Contents{
		Step: st.Step, Micro: st.Micro, LoRA: l.Job.LoRA, BaseModel: l.Job.BaseModel, Params: l.params,
		Tensors: tensors, State: st, Config: l.Job.Config, Files: map[string][]byte{TrainerStateFile: ts},
	})
	if err != nil {
		return "", err
	}
	if err := l.writeTrainerState(ts); err != nil {
		return "", err
	}
	l.lastSaved, l.lastCkpt = name, dir
	best := -1
	if st.HasBest {
		best = st.BestStep
	}
	err = checkpoints.Prune(l.Job.Dir, l.Job.Options.SaveTotalLimit, func(c checkpoints.Checkpoint) bool {
		return c.Step == best && c.Micro == 0
	}, l.Log)
	if err != nil {
		l.Log.Warn("trainer: pruning checkpoints failed", "err", err)
	}
	return dir, nil
}

// finish saves the last checkpoint and the final adapter.
func (l *Loop) finish(resumed string) (*Summary, error) {
	st := l.State
	final := filepath.Join(l.Job.Dir, "final")
	if !l.lead() { // rank 0 writes the final adapter
		return &Summary{Steps: st.Step, TotalSteps: l.Plan.TotalSteps, Loss: st.Loss, HasBest: st.HasBest, BestAUC: st.BestAUC,
			BestStep: st.BestStep, Stopped: st.Stopped, ResumedFrom: resumed, FinalAdapter: final}, nil
	}
	ck, err := l.SaveCheckpoint()
	if err != nil {
		return nil, err
	}
	if err := saveAdapter(final, l.Job.LoRA, l.Job.BaseModel, l.params); err != nil {
		return nil, err
	}
	ts, err := l.trainerState()
	if err != nil {
		return nil, err
	}
	if err := l.writeTrainerState(ts); err != nil {
		return nil, err
	}
	sum := &Summary{Steps: st.Step, TotalSteps: l.Plan.TotalSteps, Loss: st.Loss, HasBest: st.HasBest, BestAUC: st.BestAUC,
		BestStep: st.BestStep, Stopped: st.Stopped, ResumedFrom: resumed, FinalAdapter: final, LastCheckpoint: ck}
	if st.HasBest {
		sum.BestAdapter = filepath.Join(l.Job.Dir, "best")
	}
	return sum, nil
}

// saveAdapter writes a PEFT adapter to dir, replacing any previous one only
// once the new one is complete.
func saveAdapter(dir string, o lora.Options, base string, params []*engine.Param) error {
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := lora.Save(tmp, o, base, params); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("trainer: %w", err)
	}
	old := dir + ".old"
	os.RemoveAll(old)
	if _, err := os.Stat(dir); err == nil {
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("trainer: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	if d, err := os.Open(filepath.Dir(dir)); err == nil {
		d.Sync()
		d.Close()
	}
	os.RemoveAll(old)
	return nil
}

// runFiles are the files and folders a run writes in its output folder
// besides its checkpoints (with the temporary names saveAdapter uses).
var runFiles = []string{"best", "best.tmp", "best.old", "final", "final.tmp", "final.old",
	LogFile, TrainerStateFile, BatchesFile, LoRAInitFile}

// removeRun deletes an earlier run from dir (training.overwrite_output_dir):
// its checkpoints first, newest first, then everything in runFiles. Other
// files in dir are left alone.
func removeRun(dir string, all []checkpoints.Checkpoint, log *slog.Logger) error {
	var removed []string
	for i := len(all) - 1; i >= 0; i-- {
		if err := os.RemoveAll(all[i].Dir); err != nil {
			return fmt.Errorf("trainer: training.overwrite_output_dir: %w", err)
		}
		removed = append(removed, filepath.Base(all[i].Dir))
	}
	for _, name := range runFiles {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("trainer: training.overwrite_output_dir: %w", err)
		}
		removed = append(removed, name)
	}
	if len(removed) > 0 {
		log.Warn("trainer: training.overwrite_output_dir: deleted the earlier run", "dir", dir, "removed", strings.Join(removed, " "))
	}
	return nil
}

// restore starts a fresh state or loads the checkpoint Options.ResumeFromCheckpoint names.
func (l *Loop) restore(fp map[string]string) (string, error) {
	j, o := l.Job, l.Job.Options
	if o.OverwriteOutputDir && o.ResumeFromCheckpoint != "" {
		l.Log.Info("trainer: resuming, so training.overwrite_output_dir has no effect", "resume_from_checkpoint", o.ResumeFromCheckpoint)
	}
	fresh := func() {
		l.State = &State{Version: 1, TotalSteps: l.Plan.TotalSteps, StepsPerEpoch: l.Plan.StepsPerEpoch,
			Scheduler: o.LRScheduler, Seed: j.Seed, RNG: rngDoc, Fingerprint: fp}
		if j.LossScaling.Enabled {
			l.State.LossScale = j.LossScaling.Init
		}
		zeroGrads(l.params)
	}
	var dir string
	switch o.ResumeFromCheckpoint {
	case "":
		if !l.lead() && o.OverwriteOutputDir {
			fresh() // rank 0 removes the earlier run
			return "", nil
		}
		all, err := checkpoints.List(j.Dir)
		if err != nil {
			return "", err
		}
		if len(all) > 0 && !o.OverwriteOutputDir {
			return "", fmt.Errorf("trainer: %s already holds checkpoints (newest %s); set training.resume_from_checkpoint to \"auto\" to continue, training.overwrite_output_dir to true to delete them and start over, or use another output folder: %w", j.Dir, filepath.Base(all[len(all)-1].Dir), ErrExistingRun)
		}
		if o.OverwriteOutputDir {
			if err := removeRun(j.Dir, all, l.Log); err != nil {
				return "", err
			}
		}
		fresh()
		return "", nil
	case "auto":
		c, ok, err := checkpoints.Latest(j.Dir, l.Log)
		if err != nil {
			return "", err
		}
		if !ok {
			l.Log.Info("trainer: no checkpoint to resume from; starting fresh", "dir", j.Dir)
			fresh()
			return "", nil
		}
		dir = c.Dir
	default:
		dir = o.ResumeFromCheckpoint
	}
	ck, err := checkpoints.Load(dir)
	if err != nil {
		return "", fmt.Errorf("trainer: resume: %w", err)
	}
	var st State
	if err := json.Unmarshal(ck.State, &st); err != nil {
		return "", fmt.Errorf("trainer: resume %s: %s: %w", dir, checkpoints.StateFile, err)
	}
	if st.Version != 1 {
		return "", fmt.Errorf("trainer: resume %s: %s: version %d, want 1", dir, checkpoints.StateFile, st.Version)
	}
	if err := checkpoints.CompareFingerprint(st.Fingerprint, fp); err != nil {
		if !j.Force {
			return "", fmt.Errorf("trainer: resume %s: %w (force to resume anyway)", dir, err)
		}
		l.Log.Warn("trainer: resuming a changed run (forced)", "checkpoint", dir, "changes", err)
		st.Fingerprint = fp
	}
	if st.Micro >= l.Plan.Accum {
		return "", fmt.Errorf("trainer: resume %s: checkpoint is %d micro-batches into a window, but a step now has only %d", dir, st.Micro, l.Plan.Accum)
	}
	st.TotalSteps, st.StepsPerEpoch = l.Plan.TotalSteps, l.Plan.StepsPerEpoch
	if st.Step != ck.Step || st.Micro != ck.Micro {
		return "", fmt.Errorf("trainer: resume %s: state at step %d micro %d, folder says step %d micro %d", dir, st.Step, st.Micro, ck.Step, ck.Micro)
	}
	byName := map[string]*engine.Param{}
	for _, p := range ck.Params {
		byName[p.Name] = p
	}
	if len(ck.Params) != len(l.params) {
		return "", fmt.Errorf("trainer: resume %s: checkpoint has %d adapter tensors, the engine %d", dir, len(ck.Params), len(l.params))
	}
	if j.LossScaling.Enabled && !(st.LossScale > 0) {
		return "", fmt.Errorf("trainer: resume %s: %s has no loss_scale, but loss scaling is on (a checkpoint of a run without it)", dir, checkpoints.StateFile)
	}
	l.adam.T = st.AdamStep
	for i, p := range l.params {
		cp := byName[p.Name]
		if cp == nil || !slices.Equal(cp.Shape, p.Shape) {
			return "", fmt.Errorf("trainer: resume %s: engine tensor %s %v is not in the checkpoint with that shape", dir, p.Name, p.Shape)
		}
		copy(p.Value, cp.Value)
		for _, t := range []struct {
			name string
			dst  []float32
		}{{"adamw.exp_avg." + p.Name, l.adam.M[i]}, {"adamw.exp_avg_sq." + p.Name, l.adam.V[i]}, {"grad." + p.Name, p.Grad}} {
			v, ok := ck.Tensors[t.name]
			if !ok && strings.HasPrefix(t.name, "grad.") && st.Micro == 0 {
				clear(p.Grad)
				continue
			}
			if !ok || len(v) != len(t.dst) {
				return "", fmt.Errorf("trainer: resume %s: %s: tensor %q missing or of the wrong size", dir, checkpoints.OptimizerFile, t.name)
			}
			copy(t.dst, v)
		}
	}
	l.State = &st
	l.lastSaved, l.lastCkpt = checkpoints.Name(st.Step, st.Micro), dir
	if filepath.Dir(filepath.Clean(dir)) != filepath.Clean(j.Dir) {
		l.lastSaved = "" // a checkpoint from elsewhere: save our own copy
	}
	return dir, nil
}

// fingerprint lists the settings that must not change across a resume.
func (l *Loop) fingerprint() map[string]string {
	j, o := l.Job, l.Job.Options
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	fp := map[string]string{
		"seed":                             strconv.FormatUint(j.Seed, 10),
		"train_examples":                   dataHash(j.Train),
		"n_train":                          strconv.Itoa(len(j.Train)),
		"training.learning_rate":           f(o.LearningRate),
		"training.total_steps":             strconv.Itoa(l.Plan.TotalSteps),
		"training.batch":                   strconv.Itoa(l.Plan.Batch),
		"training.micro_batch_size":        strconv.Itoa(l.Plan.MicroBatch),
		"training.lr_scheduler":            o.LRScheduler,
		"training.warmup_steps":            strconv.Itoa(l.Plan.Warmup), // the steps warmup_ratio gives, too
		"training.weight_decay":            f(o.WeightDecay),
		"training.adam_beta1":              f(o.AdamBeta1),
		"training.adam_beta2":              f(o.AdamBeta2),
		"training.adam_epsilon":            f(o.AdamEpsilon),
		"training.max_grad_norm":           f(o.MaxGradNorm),
		"training.sequence_len":            strconv.Itoa(o.SequenceLen),
		"training.early_stopping_patience": strconv.Itoa(o.EarlyStoppingPatience),
		"lora.lora_r":                      strconv.Itoa(j.LoRA.R),
		"lora.lora_alpha":                  f(j.LoRA.Alpha),
		"lora.lora_dropout":                f(j.LoRA.Dropout),
		"lora.lora_target_modules":         strings.Join(j.LoRA.TargetModules, ","),
		"evaluation":                       strconv.FormatBool(j.Evaluate != nil),
	}
	if j.Evaluate != nil {
		fp["training.eval_steps"] = strconv.Itoa(o.EvalSteps)
	}
	if j.LossScaling.Enabled {
		fp["loss_scaling"] = j.LossScaling.String()
	}
	h := sha256.New()
	for _, p := range l.params {
		fmt.Fprintf(h, "%s%v;", p.Name, p.Shape)
	}
	fp["engine.params"] = hex.EncodeToString(h.Sum(nil))[:16]
	for k, v := range j.Fingerprint {
		if _, builtin := fp[k]; builtin {
			k = "job." + k // never let a caller key hide a built-in check
		}
		fp[k] = v
	}
	return fp
}

// dataHash is a sha256 over every example's tokens and labels.
func dataHash(ex []engine.Example) string {
	h := sha256.New()
	var b [8]byte
	put := func(v int) {
		binary.LittleEndian.PutUint64(b[:], uint64(int64(v)))
		h.Write(b[:])
	}
	for _, e := range ex {
		put(len(e.Tokens))
		for _, t := range e.Tokens {
			put(t)
		}
		for _, t := range e.Labels {
			put(t)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func checkExamples(ex []engine.Example, seqLen int) error {
	for i, e := range ex {
		if len(e.Tokens) == 0 {
			return fmt.Errorf("trainer: training example %d has no tokens", i)
		}
		if len(e.Labels) != len(e.Tokens) {
			return fmt.Errorf("trainer: training example %d: %d labels for %d tokens", i, len(e.Labels), len(e.Tokens))
		}
		if len(e.Tokens) > seqLen {
			return fmt.Errorf("trainer: training example %d: %d tokens exceed training.sequence_len %d (shorten the prompt's history)", i, len(e.Tokens), seqLen)
		}
		n := 0
		for _, y := range e.Labels {
			if y != engine.IgnoreIndex {
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("trainer: training example %d has no labelled token", i)
		}
	}
	return nil
}
