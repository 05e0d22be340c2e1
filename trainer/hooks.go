package trainer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rella-project/rella/internal/progress"
	"github.com/rella-project/rella/safetensors"
)

// LogFile is the JSON Lines log in the output folder, at full precision:
// one record per optimiser step {"step","epoch","loss","lr","grad_norm",
// "tokens_per_s"} (with loss scaling also "loss_scale", the scale of the
// step's window, and "skipped", true when its gradients overflowed and the
// optimiser step was skipped) and one per evaluation {"step","epoch","auc","logloss",
// "acc","n"}.
const LogFile = "log.jsonl"

// builtinHooks returns the hooks every run has.
func (l *Loop) builtinHooks() []Hook {
	hs := []Hook{l.logHook(), l.progressHook(), l.checkpointHook()}
	if l.Job.Options.RecordBatches {
		hs = append(hs, l.recordHook())
	}
	if l.Job.Evaluate != nil {
		hs = append(hs, l.evalHook(), l.bestHook())
		if l.Job.Options.EarlyStoppingPatience > 0 {
			hs = append(hs, l.earlyStopHook())
		}
	}
	return hs
}

// logHook writes log.jsonl (full precision), keeps trainer_state.json's
// log history, and reports each evaluation in one short, rounded line.
func (l *Loop) logHook() Hook {
	var f *os.File
	write := func(rec map[string]any) error {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if _, err := f.Write(append(b, '\n')); err != nil {
			return err
		}
		l.addHistory(b)
		return nil
	}
	return Hook{
		Name: "log", Priority: PriorityLog,
		OnStart: func(ctx context.Context, l *Loop) error {
			path := filepath.Join(l.Job.Dir, LogFile)
			if err := l.loadHistory(path); err != nil {
				return err
			}
			var err error
			f, err = os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			return err
		},
		OnStep: func(ctx context.Context, l *Loop, s StepInfo) error {
			rec := map[string]any{"step": s.Step, "epoch": s.Epoch, "loss": finite(s.Loss), "lr": s.LR,
				"grad_norm": finite(s.GradNorm), "tokens_per_s": s.TokensPerSec}
			if l.Job.LossScaling.Enabled {
				rec["loss_scale"], rec["skipped"] = s.LossScale, s.Skipped
			}
			return write(rec)
		},
		OnEval: func(ctx context.Context, l *Loop, e EvalInfo) error {
			improved := "no"
			if e.Improved {
				improved = "yes"
			}
			msg := "trainer: evaluation"
			if l.rep.Terminal() {
				msg = "eval"
			}
			l.rep.Event(msg, "step", fmt.Sprintf("%d/%d", e.Step, l.Plan.TotalSteps), "epoch", progress.Fixed(e.Epoch, 2),
				"auc", progress.Fixed(e.Result.AUC, 4), "logloss", progress.Fixed(e.Result.LogLoss, 4),
				"acc", progress.Fixed(e.Result.Accuracy, 4), "n", strconv.Itoa(e.Result.N), "improved", improved)
			return write(map[string]any{"step": e.Step, "epoch": e.Epoch, "auc": finite(e.Result.AUC),
				"logloss": finite(e.Result.LogLoss), "acc": finite(e.Result.Accuracy), "n": e.Result.N})
		},
		OnEnd: func(l *Loop, _ error) {
			if f != nil {
				f.Close()
			}
		},
	}
}

// trimLog drops records after step from the log, so that a resumed run
// does not repeat the steps an interrupted one logged after its checkpoint.
func trimLog(path string, step int) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	var keep bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		var rec struct {
			Step *int `json:"step"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Step == nil || *rec.Step > step {
			continue
		}
		keep.Write(sc.Bytes())
		keep.WriteByte('\n')
	}
	if keep.Len() == len(b) {
		return nil
	}
	return safetensors.WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(keep.Bytes())
		return err
	})
}

// progressHook reports the steps through the run's progress.Reporter: on a
// terminal a bar with loss, lr and tokens/s; off a terminal a line every
// logging_steps steps (every 30 s when 0) with epoch and gradient norm too.
func (l *Loop) progressHook() Hook {
	var task *progress.Task
	return Hook{
		Name: "progress", Priority: PriorityProgress,
		OnStart: func(ctx context.Context, l *Loop) error {
			task = l.rep.Start(progress.Spec{Name: "training", Total: l.Plan.TotalSteps, Done: l.State.Step,
				Unit: "steps", EveryN: l.Job.Options.LoggingSteps})
			return nil
		},
		OnStep: func(ctx context.Context, l *Loop, s StepInfo) error {
			if l.rep.Terminal() {
				task.Status("loss", progress.Fixed(s.Loss, 4), "lr", progress.Sci(s.LR), "tok/s", progress.Count(s.TokensPerSec))
			} else {
				task.Status("epoch", progress.Fixed(s.Epoch, 2), "loss", progress.Fixed(s.Loss, 4), "lr", progress.Sci(s.LR),
					"grad_norm", progress.Sig(s.GradNorm), "tok/s", progress.Count(s.TokensPerSec))
			}
			task.Set(s.Step)
			return nil
		},
		OnEnd: func(l *Loop, _ error) {
			if task != nil {
				task.Finish()
			}
		},
	}
}

// evalHook evaluates when due (every eval_steps, every epoch, and at the end).
func (l *Loop) evalHook() Hook {
	return Hook{
		Name: "evaluate", Priority: PriorityEvaluate,
		OnStep: func(ctx context.Context, l *Loop, s StepInfo) error {
			if !l.evalDue(s.Step) {
				return nil
			}
			return l.evaluate(ctx)
		},
	}
}

// bestHook keeps the adapter with the best validation AUC in Dir/best.
func (l *Loop) bestHook() Hook {
	return Hook{
		Name: "best", Priority: PriorityBest,
		OnEval: func(ctx context.Context, l *Loop, e EvalInfo) error {
			st := l.State
			if !e.Improved {
				st.BadEvals++
				return nil
			}
			if err := saveAdapter(filepath.Join(l.Job.Dir, "best"), l.Job.LoRA, l.Job.BaseModel, l.params); err != nil {
				return err
			}
			st.HasBest, st.BestAUC, st.BestStep, st.BadEvals = true, e.Result.AUC, e.Step, 0
			return nil
		},
	}
}

// earlyStopHook stops after early_stopping_patience evaluations without improvement.
func (l *Loop) earlyStopHook() Hook {
	return Hook{
		Name: "early-stopping", Priority: PriorityEarlyStop,
		OnEval: func(ctx context.Context, l *Loop, e EvalInfo) error {
			if p := l.Job.Options.EarlyStoppingPatience; l.State.BadEvals >= p {
				l.Stop(fmt.Sprintf("early stopping: no AUC improvement in %d evaluations (best %.5f at step %d)", p, l.State.BestAUC, l.State.BestStep))
				l.Log.Info("trainer: " + l.State.Stopped)
			}
			return nil
		},
	}
}

// checkpointHook saves every save_steps (or at every evaluation) and at the end.
func (l *Loop) checkpointHook() Hook {
	return Hook{
		Name: "checkpoint", Priority: PriorityCheckpoint,
		OnStep: func(ctx context.Context, l *Loop, s StepInfo) error {
			if !l.saveDue(s.Step) && l.State.Stopped == "" {
				return nil
			}
			dir, err := l.SaveCheckpoint()
			if err == nil {
				l.Log.Debug("trainer: checkpoint saved", "dir", dir)
			}
			return err
		},
	}
}
