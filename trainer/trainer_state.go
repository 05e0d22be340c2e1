package trainer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/internal/atomicfile"
)

// TrainerStateFile is the HF-style summary of a run, written beside
// log.jsonl at every checkpoint and at the end, and inside every checkpoint
// folder (as HF Trainer does).
const TrainerStateFile = "trainer_state.json"

// TrainerState is the content of TrainerStateFile, with the field names of
// HF's TrainerState. It holds no timings, so an interrupted and resumed run
// writes the same file as an uninterrupted one.
type TrainerState struct {
	GlobalStep     int     `json:"global_step"`      // optimiser steps done
	Epoch          float64 `json:"epoch"`            // global_step / steps per epoch
	MaxSteps       int     `json:"max_steps"`        // the run's total steps
	NumTrainEpochs int     `json:"num_train_epochs"` // epochs the run touches
	LoggingSteps   int     `json:"logging_steps"`
	EvalSteps      int     `json:"eval_steps"`
	SaveSteps      int     `json:"save_steps"`
	TrainBatchSize int     `json:"train_batch_size"` // examples per optimiser step
	// MetricForBestModel names the metric best_metric is: validation AUC.
	MetricForBestModel string `json:"metric_for_best_model"`
	// BestMetric and BestGlobalStep are the best validation AUC and its
	// step; null before the first evaluation and in runs without one.
	BestMetric     *float64 `json:"best_metric"`
	BestGlobalStep *int     `json:"best_global_step"`
	// BestModelCheckpoint is the folder holding the adapter of the best
	// evaluation (OUTPUT/best, a PEFT adapter), null when there is none.
	BestModelCheckpoint *string `json:"best_model_checkpoint"`
	// LogHistory lists the train records ({"step","epoch","loss",
	// "learning_rate","grad_norm"}: every logging_steps steps and the last,
	// every step when logging_steps is 0) and every evaluation ({"step",
	// "epoch","eval_auc","eval_logloss","eval_acc","eval_samples"}), in order.
	LogHistory []map[string]any `json:"log_history"`
}

// trainerState returns the run's TrainerStateFile content.
func (l *Loop) trainerState() ([]byte, error) {
	st, o := l.State, l.Job.Options
	ts := TrainerState{GlobalStep: st.Step, Epoch: float64(st.Step) / float64(l.Plan.StepsPerEpoch),
		MaxSteps: l.Plan.TotalSteps, NumTrainEpochs: l.Plan.Epochs, LoggingSteps: o.LoggingSteps,
		EvalSteps: o.EvalSteps, SaveSteps: o.SaveSteps, TrainBatchSize: l.Plan.Batch,
		MetricForBestModel: "eval_auc", LogHistory: l.history}
	if ts.LogHistory == nil {
		ts.LogHistory = []map[string]any{}
	}
	if st.HasBest {
		auc, step, best := st.BestAUC, st.BestStep, filepath.Join(l.Job.Dir, "best")
		ts.BestMetric, ts.BestGlobalStep, ts.BestModelCheckpoint = &auc, &step, &best
	}
	b, err := json.MarshalIndent(ts, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("trainer: %s: %w", TrainerStateFile, err)
	}
	return append(b, '\n'), nil
}

// writeTrainerState writes TrainerStateFile beside log.jsonl, atomically.
func (l *Loop) writeTrainerState(b []byte) error {
	if err := atomicfile.WriteFile(filepath.Join(l.Job.Dir, TrainerStateFile), b); err != nil {
		return fmt.Errorf("trainer: %s: %w", TrainerStateFile, err)
	}
	return nil
}

// loadHistory rebuilds the log history from log.jsonl (already trimmed to
// the resumed step), so that a resumed run's history is the uninterrupted one's.
func (l *Loop) loadHistory(path string) error {
	l.history = nil
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		l.addHistory(sc.Bytes())
	}
	return sc.Err()
}

// addHistory appends the log.jsonl record line to the history when it
// belongs there. Both the running and the resumed path go through the
// record's JSON, so they build the same values.
func (l *Loop) addHistory(line []byte) {
	var rec map[string]any
	if json.Unmarshal(line, &rec) != nil {
		return
	}
	step, ok := rec["step"].(float64)
	if !ok {
		return
	}
	h := map[string]any{"step": int(step), "epoch": rec["epoch"]}
	switch {
	case has(rec, "loss"):
		if n := l.Job.Options.LoggingSteps; n > 0 && int(step)%n != 0 && int(step) != l.Plan.TotalSteps {
			return
		}
		h["loss"], h["learning_rate"], h["grad_norm"] = rec["loss"], rec["lr"], rec["grad_norm"]
	case has(rec, "auc"):
		h["eval_auc"], h["eval_logloss"], h["eval_acc"], h["eval_samples"] = rec["auc"], rec["logloss"], rec["acc"], rec["n"]
	default:
		return
	}
	l.history = append(l.history, h)
}

func has(m map[string]any, k string) bool { _, ok := m[k]; return ok }

// finite maps NaN and ±Inf to nil so that a record stays valid JSON.
func finite(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}
