package trainer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rella-project/rella/checkpoints"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

// cancelAfter cancels a context after its n-th LossGrad call.
type cancelAfter struct {
	engine.Trainer
	n, calls int
	cancel   context.CancelFunc
}

func (c *cancelAfter) LossGrad(ctx context.Context, b []engine.Example, seed uint64) (float64, int, error) {
	l, n, err := c.Trainer.LossGrad(ctx, b, seed)
	if c.calls++; c.calls == c.n {
		c.cancel()
	}
	return l, n, err
}

// interruptOnce runs s in dir until it is interrupted after n micro-batches.
func interruptOnce(t *testing.T, s trainertest.Setup, dir string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eng := &cancelAfter{Trainer: s.NewEngine(t), n: n, cancel: cancel}
	j := trainer.Job{Engine: eng, Train: s.Train, Options: s.Options, LoRA: s.LoRA, BaseModel: "test-model", Seed: s.Seed,
		Dir: dir, Config: []byte("seed: 1\n"), Progress: io.Discard, Hooks: s.Hooks}
	if s.Evaluate != nil {
		j.Evaluate = s.Evaluate(eng)
	}
	if _, err := trainer.Run(ctx, j); !errors.Is(err, trainer.ErrInterrupted) {
		t.Fatalf("want an interrupted run, got %v", err)
	}
}

func readTrainerState(t *testing.T, path string) trainer.TrainerState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ts trainer.TrainerState
	if err := json.Unmarshal(b, &ts); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ts
}

// TestTrainerStateFile: trainer_state.json beside log.jsonl holds HF's
// fields, the best metric and its adapter, and a log history made of
// log.jsonl's records (thinned by logging_steps, evaluations all kept);
// every checkpoint folder holds the copy of its time, also when interrupted.
func TestTrainerStateFile(t *testing.T) {
	s := setup(t)
	s.Options.LoggingSteps = 4
	s.Hooks, s.Evaluate = scripted(map[int]float64{2: 0.6, 4: 0.7, 6: 0.65, 8: 0.69, 9: 0.68})
	dir := t.TempDir()
	// Interrupted mid-window in step 6: the state file says step 5.
	interruptOnce(t, s, dir, 22)
	if ts := readTrainerState(t, filepath.Join(dir, trainer.TrainerStateFile)); ts.GlobalStep != 5 || *ts.BestGlobalStep != 4 {
		t.Errorf("after the interruption: global_step %d best step %v, want 5, 4", ts.GlobalStep, ts.BestGlobalStep)
	}
	s.Options.ResumeFromCheckpoint = "auto"
	out := trainertest.Train(t, s, dir)
	ts := readTrainerState(t, filepath.Join(dir, trainer.TrainerStateFile))
	if ts.GlobalStep != 9 || ts.Epoch != 3 || ts.MaxSteps != 9 || ts.NumTrainEpochs != 3 || ts.LoggingSteps != 4 || ts.EvalSteps != 2 ||
		ts.SaveSteps != 4 || ts.TrainBatchSize != 10 || ts.MetricForBestModel != "eval_auc" {
		t.Errorf("trainer state %+v", ts)
	}
	if ts.BestMetric == nil || *ts.BestMetric != 0.7 || *ts.BestGlobalStep != 4 || *ts.BestModelCheckpoint != filepath.Join(dir, "best") ||
		out.Summary.BestAdapter != *ts.BestModelCheckpoint {
		t.Errorf("best: %v %v %v", ts.BestMetric, ts.BestGlobalStep, ts.BestModelCheckpoint)
	}
	// The history from log.jsonl, by hand: train records at steps 4, 8, 9,
	// evaluations at 2, 4, 6, 8, 9, in log order.
	steps, evals := readLog(t, dir)
	var want []map[string]any
	ev := 0
	for _, st := range steps {
		if st.Step%4 == 0 || st.Step == 9 {
			want = append(want, map[string]any{"step": float64(st.Step), "epoch": float64(st.Step) / 3, "loss": *st.Loss,
				"learning_rate": *st.LR, "grad_norm": *st.GradNorm})
		}
		if ev < len(evals) && evals[ev].Step == st.Step {
			want = append(want, map[string]any{"step": float64(st.Step), "epoch": float64(st.Step) / 3, "eval_auc": *evals[ev].AUC,
				"eval_logloss": 0.5, "eval_acc": 0.5, "eval_samples": float64(10)})
			ev++
		}
	}
	if len(want) != 8 || !reflect.DeepEqual(ts.LogHistory, want) {
		t.Errorf("log_history:\n got %v\nwant %v", ts.LogHistory, want)
	}
	// Each checkpoint holds its own copy, in its manifest.
	all, _ := checkpoints.List(dir)
	for _, c := range all {
		if err := checkpoints.Verify(c.Dir); err != nil {
			t.Fatal(err)
		}
		cs := readTrainerState(t, filepath.Join(c.Dir, trainer.TrainerStateFile))
		if cs.GlobalStep != c.Step {
			t.Errorf("%s: global_step %d", c.Dir, cs.GlobalStep)
		}
		if c.Step == 9 && !reflect.DeepEqual(cs, ts) {
			t.Errorf("last checkpoint's trainer_state.json differs from the folder's")
		}
	}
	// Without evaluation: no best, every step in the history.
	s2 := setup(t)
	s2.Evaluate = nil
	out2 := trainertest.Train(t, s2, t.TempDir())
	ts2 := readTrainerState(t, filepath.Join(out2.Dir, trainer.TrainerStateFile))
	if ts2.BestMetric != nil || ts2.BestModelCheckpoint != nil || len(ts2.LogHistory) != 9 {
		t.Errorf("no evaluator: best %v %v, %d history records", ts2.BestMetric, ts2.BestModelCheckpoint, len(ts2.LogHistory))
	}
}

// TestOverwriteOutputDir: a fresh run in a folder with an earlier run is
// refused, naming training.overwrite_output_dir; with it the earlier run's
// files are deleted (others kept) and the run ends exactly as in an empty
// folder; a resumed run ignores it.
func TestOverwriteOutputDir(t *testing.T) {
	s := setup(t)
	straight := trainertest.Train(t, s, t.TempDir())
	dir := t.TempDir()
	// An earlier, different run (other learning rate), interrupted.
	old := s
	old.Options.LearningRate = 0.2
	interruptOnce(t, old, dir, 30)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
	_, err := runJob(t, s, dir, nil)
	if !errors.Is(err, trainer.ErrExistingRun) || !strings.Contains(err.Error(), "training.overwrite_output_dir") {
		t.Fatalf("fresh run over an earlier one: %v", err)
	}
	// Resumed (a copy of the folder): overwrite_output_dir has no effect, the old run continues.
	resDir := t.TempDir()
	interruptOnce(t, old, resDir, 30)
	res := old
	res.Options.OverwriteOutputDir, res.Options.ResumeFromCheckpoint = true, "auto"
	if sum, err := runJob(t, res, resDir, func(j *trainer.Job) { j.Evaluate = res.Evaluate(j.Engine) }); err != nil || sum.ResumedFrom == "" {
		t.Fatalf("resume with overwrite_output_dir: %v %+v", err, sum)
	}
	// Fresh with overwrite_output_dir: when the run starts, only notes.txt is left.
	before, _ := os.ReadDir(dir)
	if len(before) < 4 {
		t.Fatalf("the earlier run left only %d entries", len(before))
	}
	s.Options.OverwriteOutputDir = true
	s.Hooks = append(s.Hooks, trainer.Hook{Name: "look", OnStart: func(ctx context.Context, l *trainer.Loop) error {
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != "notes.txt" {
			t.Errorf("at the start of the overwriting run the folder holds %v, want only notes.txt", names)
		}
		return nil
	}})
	again := trainertest.Train(t, s, dir)
	trainertest.Compare(t, straight, again)
	if b, err := os.ReadFile(filepath.Join(dir, "notes.txt")); err != nil || string(b) != "mine" {
		t.Errorf("a file the trainer did not write was touched: %q %v", b, err)
	}
}

// TestCosineScheduleResumes: with lr_scheduler cosine and warmup_ratio,
// every step's rate is HF's cosine-with-warm-up value (ceil(0.25*9) = 3
// warm-up steps), interrupted runs included, and they end bit-identical.
func TestCosineScheduleResumes(t *testing.T) {
	s := setup(t)
	s.Options.LRScheduler, s.Options.WarmupSteps, s.Options.WarmupRatio = "cosine", 0, 0.25
	trainertest.ResumeExact(t, s, trainertest.Cut{MicroBatches: 13}, trainertest.Cut{MicroBatches: 26}, trainertest.Cut{Eval: 4})
	out := trainertest.Train(t, s, t.TempDir(), trainertest.Cut{MicroBatches: 17})
	steps, _ := readLog(t, out.Dir)
	for i, r := range steps {
		want := 0.05 * float64(i) / 3
		if i >= 3 {
			want = 0.05 * 0.5 * (1 + math.Cos(math.Pi*float64(i-3)/6))
		}
		if math.Abs(*r.LR-want) > 1e-16 {
			t.Errorf("step %d: lr %v, want %v", r.Step, *r.LR, want)
		}
	}
	// Changing the scheduler or the warm-up it gives is a changed run.
	s.Options.ResumeFromCheckpoint = "auto"
	lin := s
	lin.Options.LRScheduler = "linear"
	if _, err := runJob(t, lin, out.Dir, nil); err == nil || !strings.Contains(err.Error(), "training.lr_scheduler: cosine -> linear") {
		t.Errorf("scheduler change: %v", err)
	}
	wr := s
	wr.Options.WarmupRatio = 0.5
	if _, err := runJob(t, wr, out.Dir, nil); err == nil || !strings.Contains(err.Error(), "training.warmup_steps: 3 -> 5") {
		t.Errorf("warm-up change: %v", err)
	}
}
