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
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/rella-project/rella/safetensors"
)

// LogFile is the JSON Lines log in the output folder: one record per
// optimiser step {"step","epoch","loss","lr","grad_norm","tokens_per_s"} and
// one per evaluation {"step","epoch","auc","logloss","acc","n"}.
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

// finite maps NaN and ±Inf to nil so that a record stays valid JSON.
func finite(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

// logHook writes log.jsonl and the slog lines.
func (l *Loop) logHook() Hook {
	var f *os.File
	write := func(rec map[string]any) error {
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, err = f.Write(append(b, '\n'))
		return err
	}
	return Hook{
		Name: "log", Priority: PriorityLog,
		OnStart: func(ctx context.Context, l *Loop) error {
			var err error
			f, err = os.OpenFile(filepath.Join(l.Job.Dir, LogFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			return err
		},
		OnStep: func(ctx context.Context, l *Loop, s StepInfo) error {
			if n := l.Job.Options.LoggingSteps; n > 0 && (s.Step%n == 0 || s.Step == l.Plan.TotalSteps) {
				l.Log.Info("trainer: step", "step", s.Step, "of", l.Plan.TotalSteps, "epoch", fmt.Sprintf("%.2f", s.Epoch),
					"loss", s.Loss, "lr", s.LR, "grad_norm", s.GradNorm, "tokens_per_s", math.Round(s.TokensPerSec))
			}
			return write(map[string]any{"step": s.Step, "epoch": s.Epoch, "loss": finite(s.Loss), "lr": s.LR,
				"grad_norm": finite(s.GradNorm), "tokens_per_s": s.TokensPerSec})
		},
		OnEval: func(ctx context.Context, l *Loop, e EvalInfo) error {
			l.Log.Info("trainer: evaluation", "step", e.Step, "auc", e.Result.AUC, "logloss", e.Result.LogLoss, "acc", e.Result.Accuracy, "n", e.Result.N, "improved", e.Improved)
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

// progressHook draws the progress bar (loss, lr, tokens/s, ETA). Updates go
// through a buffered channel to a goroutine and are dropped when it lags, so
// a slow terminal never slows training.
func (l *Loop) progressHook() Hook {
	type update struct {
		step int
		desc string
	}
	var ch chan update
	var wg sync.WaitGroup
	return Hook{
		Name: "progress", Priority: PriorityProgress,
		OnStart: func(ctx context.Context, l *Loop) error {
			w := l.Job.Progress
			if w == nil {
				if !term.IsTerminal(int(os.Stderr.Fd())) {
					return nil
				}
				w = os.Stderr
			}
			bar := progressbar.NewOptions64(int64(l.Plan.TotalSteps),
				progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("training"),
				progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetWidth(30))
			bar.Set64(int64(l.State.Step))
			ch = make(chan update, 64)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for u := range ch {
					bar.Describe(u.desc)
					bar.Set64(int64(u.step))
				}
				bar.Exit()
				fmt.Fprintln(w)
			}()
			return nil
		},
		OnStep: func(ctx context.Context, l *Loop, s StepInfo) error {
			if ch == nil {
				return nil
			}
			u := update{s.Step, fmt.Sprintf("loss %.4f lr %.2e %.0f tok/s", s.Loss, s.LR, s.TokensPerSec)}
			select {
			case ch <- u:
			default:
			}
			return nil
		},
		OnEnd: func(l *Loop, _ error) {
			if ch != nil {
				close(ch)
				wg.Wait()
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
