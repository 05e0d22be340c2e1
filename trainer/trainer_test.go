package trainer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rella-project/rella/checkpoints"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

// call is one recorded LossGrad call.
type call struct {
	batch string // the examples' tokens
	seed  uint64
	loss  float64
	n     int
}

// recorder wraps an engine and records its LossGrad calls into a shared log.
type recorder struct {
	engine.Trainer
	mu    *sync.Mutex
	calls *[]call
	nanAt int // return a NaN loss sum on this call (1-based, this engine only); 0 = never
	mine  int
}

func (r *recorder) LossGrad(ctx context.Context, b []engine.Example, seed uint64) (float64, int, error) {
	l, n, err := r.Trainer.LossGrad(ctx, b, seed)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mine++
	if r.mine == r.nanAt {
		l = math.NaN()
	}
	*r.calls = append(*r.calls, call{fmt.Sprint(b), seed, l, n})
	return l, n, err
}

func recording(s *trainertest.Setup) *[]call {
	var mu sync.Mutex
	calls := &[]call{}
	s.Wrap = func(e engine.Trainer) engine.Trainer { return &recorder{Trainer: e, mu: &mu, calls: calls} }
	return calls
}

type logRec struct {
	Step     int      `json:"step"`
	Loss     *float64 `json:"loss"`
	LR       *float64 `json:"lr"`
	GradNorm *float64 `json:"grad_norm"`
	AUC      *float64 `json:"auc"`
}

func readLog(t *testing.T, dir string) (steps, evals []logRec) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, trainer.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r logRec
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
		if r.Loss != nil {
			steps = append(steps, r)
		} else {
			evals = append(evals, r)
		}
	}
	return steps, evals
}

// TestDataOrderAndSeeds: the micro-batches fed to the engine are, step by
// step, the windows of each epoch's EpochOrder (the N mod batch left-over
// examples unused), with DropoutSeed(seed, step, k); and an interrupted,
// resumed run (cut mid-window in epoch 1) feeds exactly the same sequence:
// the resume neither repeats nor skips a micro-batch.
func TestDataOrderAndSeeds(t *testing.T) {
	s := setup(t)
	plan, _ := s.Options.Plan(len(s.Train))
	var want []call
	for step := 0; step < plan.TotalSteps; step++ {
		e := step / plan.StepsPerEpoch
		order := trainer.EpochOrder(s.Seed, e, len(s.Train))
		base := (step % plan.StepsPerEpoch) * plan.Batch
		for k := 0; k < plan.Accum; k++ {
			lo := base + k*plan.MicroBatch
			hi := min(lo+plan.MicroBatch, base+plan.Batch)
			var b []engine.Example
			for _, i := range order[lo:hi] {
				b = append(b, s.Train[i])
			}
			want = append(want, call{batch: fmt.Sprint(b), seed: trainer.DropoutSeed(s.Seed, step, k)})
		}
	}
	for _, cuts := range [][]trainertest.Cut{nil, {{MicroBatches: 18}, {MicroBatches: 27}}} {
		calls := recording(&s)
		trainertest.Train(t, s, t.TempDir(), cuts...)
		if len(*calls) != len(want) {
			t.Fatalf("cuts %v: %d LossGrad calls, want %d", cuts, len(*calls), len(want))
		}
		for i, c := range *calls {
			if c.batch != want[i].batch || c.seed != want[i].seed {
				t.Fatalf("cuts %v: call %d: batch %s seed %x, want %s seed %x", cuts, i, c.batch, c.seed, want[i].batch, want[i].seed)
			}
		}
	}
}

// TestLossNormalisedByWindowTokens: the logged loss is the window's summed
// loss over its labelled-token total (not a mean of micro-batch means), and
// the logged gradient norm is the norm of the summed gradient over that
// total, recomputed here from the engine with the same micro-batches.
func TestLossNormalisedByWindowTokens(t *testing.T) {
	s := setup(t)
	s.Options.MaxSteps = 1
	calls := recording(&s)
	out := trainertest.Train(t, s, t.TempDir())
	steps, _ := readLog(t, out.Dir)
	if len(steps) != 1 || len(*calls) != 4 {
		t.Fatalf("%d step records, %d calls; want 1, 4", len(steps), len(*calls))
	}
	var sum, meanOfMeans float64
	tokens := 0
	for _, c := range *calls {
		sum += c.loss
		tokens += c.n
		meanOfMeans += c.loss / float64(c.n) / 4
	}
	if got := *steps[0].Loss; math.Abs(got-sum/float64(tokens)) > 1e-12 {
		t.Errorf("loss %v, want %v (window sum / window tokens)", got, sum/float64(tokens))
	}
	if math.Abs(meanOfMeans-sum/float64(tokens)) < 1e-6 {
		t.Fatalf("test data does not tell the two normalisations apart")
	}
	// Recompute the gradient of the window from a fresh engine.
	eng := s.NewEngine(t)
	order := trainer.EpochOrder(s.Seed, 0, len(s.Train))
	for k := 0; k < 4; k++ {
		var b []engine.Example
		for _, i := range order[3*k : min(3*k+3, 10)] {
			b = append(b, s.Train[i])
		}
		if _, _, err := eng.LossGrad(context.Background(), b, trainer.DropoutSeed(s.Seed, 0, k)); err != nil {
			t.Fatal(err)
		}
	}
	var sq float64
	for _, p := range eng.Params() {
		for _, g := range p.Grad {
			sq += (float64(g) / float64(tokens)) * (float64(g) / float64(tokens))
		}
	}
	if got, want := *steps[0].GradNorm, math.Sqrt(sq); math.Abs(got-want) > 1e-6*want {
		t.Errorf("grad_norm %v, want %v", got, want)
	}
}

// TestLRScheduleInLog: the learning rate of every step follows the linear
// schedule with warm-up over the whole run, also across resumes (HF resumes
// have restarted or shifted it).
func TestLRScheduleInLog(t *testing.T) {
	s := setup(t)
	out := trainertest.Train(t, s, t.TempDir(), trainertest.Cut{MicroBatches: 13}, trainertest.Cut{MicroBatches: 26})
	steps, evals := readLog(t, out.Dir)
	if len(steps) != 9 {
		t.Fatalf("%d step records, want 9", len(steps))
	}
	for i, r := range steps {
		// warm-up 2 steps, then linear to 0 at step 9 (HF's formula, by hand).
		want := 0.05 * float64(i) / 2
		if i >= 2 {
			want = 0.05 * float64(9-i) / 7
		}
		if r.Step != i+1 || math.Abs(*r.LR-want) > 1e-15 {
			t.Errorf("record %d: step %d lr %v, want step %d lr %v", i, r.Step, *r.LR, i+1, want)
		}
	}
	// Evaluations every 2 steps and at the end.
	var at []int
	for _, e := range evals {
		at = append(at, e.Step)
	}
	if fmt.Sprint(at) != "[2 4 6 8 9]" {
		t.Errorf("evaluations at %v, want [2 4 6 8 9]", at)
	}
}

// scripted returns hooks and an evaluator that report, after step s, the
// AUC auc[s] (and NaN-free other metrics).
func scripted(auc map[int]float64) ([]trainer.Hook, func(engine.Trainer) trainer.Evaluator) {
	step := 0
	h := trainer.Hook{Name: "track-step", Priority: 0,
		OnStart: func(ctx context.Context, l *trainer.Loop) error { step = l.State.Step; return nil },
		OnStep:  func(ctx context.Context, l *trainer.Loop, s trainer.StepInfo) error { step = s.Step; return nil },
	}
	ev := func(engine.Trainer) trainer.Evaluator {
		return func(ctx context.Context) (metrics.Result, error) {
			if err := ctx.Err(); err != nil {
				return metrics.Result{}, err
			}
			return metrics.Result{AUC: auc[step], LogLoss: 0.5, Accuracy: 0.5, N: 10}, nil
		}
	}
	return []trainer.Hook{h}, ev
}

// TestEarlyStoppingSurvivesResume: with patience 2 and AUCs 0.6, 0.7, 0.65,
// 0.69 after steps 2, 4, 6, 8 the run stops after step 8 with the best at
// step 4, also when interrupted between the evaluations (patience counter
// and best metric come back from the checkpoint), and the best adapter is
// the adapter after step 4.
func TestEarlyStoppingSurvivesResume(t *testing.T) {
	s := setup(t)
	s.Options.EarlyStoppingPatience = 2
	s.Options.SaveSteps = 0 // checkpoint at each evaluation
	s.Hooks, s.Evaluate = scripted(map[int]float64{2: 0.6, 4: 0.7, 6: 0.65, 8: 0.69, 9: 0.9})
	out := trainertest.Train(t, s, t.TempDir())
	sum := out.Summary
	if sum.Steps != 8 || !sum.HasBest || sum.BestStep != 4 || sum.BestAUC != 0.7 || !strings.Contains(sum.Stopped, "early stopping") {
		t.Fatalf("summary %+v, want stop after step 8, best 0.7 at step 4", *sum)
	}
	// best/ holds the adapter of step 4: the same as checkpoint-4's
	// (kept by save_total_limit 2 because it is the best).
	a, _ := os.ReadFile(filepath.Join(out.Dir, "best", lora.WeightsFile))
	b, err := os.ReadFile(filepath.Join(out.Dir, "checkpoint-4", checkpoints.AdapterDir, lora.WeightsFile))
	if err != nil || !bytes.Equal(a, b) {
		t.Errorf("best adapter differs from checkpoint-4's (%v)", err)
	}
	all, _ := checkpoints.List(out.Dir)
	var names []string
	for _, c := range all {
		names = append(names, filepath.Base(c.Dir))
	}
	if fmt.Sprint(names) != "[checkpoint-4 checkpoint-6 checkpoint-8]" {
		t.Errorf("checkpoints %v, want the newest 2 plus the best (4, 6, 8)", names)
	}
	// Interrupted after the step-6 evaluation (bad count 1) and during the
	// step-8 one: same outcome, bit for bit.
	trainertest.ResumeExact(t, s, trainertest.Cut{MicroBatches: 25}, trainertest.Cut{Eval: 4})
	// A resumed, already stopped run stays stopped.
	s.Options.ResumeFromCheckpoint = "auto"
	again := trainertest.Train(t, s, out.Dir)
	if again.Summary.Steps != 8 || again.Summary.BestStep != 4 {
		t.Errorf("resuming a stopped run: %+v", *again.Summary)
	}
}

// TestCorruptNewestCheckpointSkipped: a truncated, unmarked or tampered
// newest checkpoint is skipped with a warning, and resuming from the one
// before still ends bit-identical.
func TestCorruptNewestCheckpointSkipped(t *testing.T) {
	s := setup(t)
	straight := trainertest.Train(t, s, t.TempDir())
	damage := map[string]func(dir string){
		"truncated": func(dir string) {
			p := filepath.Join(dir, checkpoints.OptimizerFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o644)
		},
		"no COMPLETE": func(dir string) { os.Remove(filepath.Join(dir, checkpoints.CompleteFile)) },
		"bit flip": func(dir string) {
			p := filepath.Join(dir, checkpoints.AdapterDir, lora.WeightsFile)
			b, _ := os.ReadFile(p)
			b[len(b)-3] ^= 1
			os.WriteFile(p, b, 0o644)
		},
	}
	for name, f := range damage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			// Interrupted twice mid-window in step 6, then run to the end.
			trainertest.Train(t, s, dir, trainertest.Cut{MicroBatches: 22}, trainertest.Cut{MicroBatches: 23})
			all, _ := checkpoints.List(dir)
			newest := all[len(all)-1]
			if newest.Step != 9 {
				t.Fatalf("newest checkpoint %+v", newest)
			}
			// Damage the final checkpoint, then resume: the run must go back
			// to the newest intact one and still finish identically.
			f(newest.Dir)
			var logBuf bytes.Buffer
			c, ok, err := checkpoints.Latest(dir, slog.New(slog.NewTextHandler(&logBuf, nil)))
			if err != nil || !ok || c.Dir == newest.Dir {
				t.Fatalf("Latest = %+v, %v, %v; want an older checkpoint", c, ok, err)
			}
			if !strings.Contains(logBuf.String(), filepath.Base(newest.Dir)) {
				t.Errorf("no warning naming %s: %q", newest.Dir, logBuf.String())
			}
			s2 := s
			s2.Options.ResumeFromCheckpoint = "auto"
			again := trainertest.Train(t, s2, dir)
			if err := trainertest.SameBits(straight.Params, again.Params); err != nil {
				t.Errorf("after resuming from %s: %v", c.Dir, err)
			}
		})
	}
}

func runJob(t *testing.T, s trainertest.Setup, dir string, mod func(*trainer.Job)) (*trainer.Summary, error) {
	eng := s.NewEngine(t)
	j := trainer.Job{Engine: eng, Train: s.Train, Options: s.Options, LoRA: s.LoRA, Seed: s.Seed, Dir: dir, Progress: io.Discard}
	if mod != nil {
		mod(&j)
	}
	return trainer.Run(context.Background(), j)
}

// TestChangedRunRefused: resuming with a setting that changes the run is an
// error naming the setting, unless forced; a fresh run refuses a folder that
// holds checkpoints.
func TestChangedRunRefused(t *testing.T) {
	s := setup(t)
	s.Evaluate = nil
	dir := t.TempDir()
	trainertest.Train(t, s, dir, trainertest.Cut{MicroBatches: 9})
	if _, err := runJob(t, s, dir, nil); err == nil || !strings.Contains(err.Error(), "already holds checkpoints") {
		t.Errorf("fresh run in a used folder: %v", err)
	}
	s.Options.ResumeFromCheckpoint = "auto"
	lr := s
	lr.Options.LearningRate = 0.1
	_, err := runJob(t, lr, dir, nil)
	if !errors.Is(err, checkpoints.ErrChangedRun) || !strings.Contains(err.Error(), "training.learning_rate: 0.05 -> 0.1") {
		t.Errorf("changed lr: %v", err)
	}
	data := s
	data.Train = s.Train[1:]
	if _, err := runJob(t, data, dir, nil); err == nil || !strings.Contains(err.Error(), "train_examples:") || !strings.Contains(err.Error(), "n_train: 37 -> 36") {
		t.Errorf("changed data: %v", err)
	}
	if _, err := runJob(t, s, dir, func(j *trainer.Job) { j.Seed = 7 }); err == nil || !strings.Contains(err.Error(), "seed: 42 -> 7") {
		t.Errorf("changed seed: %v", err)
	}
	if _, err := runJob(t, s, dir, func(j *trainer.Job) { j.Fingerprint = map[string]string{"model": "x"} }); err == nil || !strings.Contains(err.Error(), "model: (not set) -> x") {
		t.Errorf("changed caller fingerprint: %v", err)
	}
	// A caller key named like a built-in one does not replace the built-in check.
	if _, err := runJob(t, data, dir, func(j *trainer.Job) { j.Fingerprint = map[string]string{"train_examples": "same"} }); err == nil ||
		!strings.Contains(err.Error(), "train_examples: ") || !strings.Contains(err.Error(), "job.train_examples: (not set) -> same") {
		t.Errorf("caller key colliding with a built-in: %v", err)
	}
	// Settings that do not change the run are free to change.
	free := s
	free.Options.LoggingSteps = 5
	free.Options.SaveTotalLimit = 1
	if sum, err := runJob(t, free, dir, nil); err != nil || sum.Steps != 9 {
		t.Errorf("resume with changed logging: %v %+v", err, sum)
	}
	// Forced.
	dir2 := t.TempDir()
	trainertest.Train(t, s, dir2, trainertest.Cut{MicroBatches: 9})
	if sum, err := runJob(t, lr, dir2, func(j *trainer.Job) { j.Force = true }); err != nil || sum.Steps != 9 {
		t.Errorf("forced resume: %v", err)
	}
}

// TestNaNLossStops names the step.
func TestNaNLossStops(t *testing.T) {
	s := setup(t)
	var mu sync.Mutex
	calls := &[]call{}
	eng := &recorder{Trainer: s.NewEngine(t), mu: &mu, calls: calls, nanAt: 10}
	_, err := trainer.Run(context.Background(), trainer.Job{Engine: eng, Train: s.Train, Options: s.Options, LoRA: s.LoRA,
		Seed: 1, Dir: t.TempDir(), Progress: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "step 3, micro-batch 1: loss is NaN") {
		t.Errorf("got %v, want an error naming step 3", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestBadInputs: examples and engines the trainer must refuse.
func TestBadInputs(t *testing.T) {
	s := setup(t)
	long := append([]engine.Example(nil), s.Train...)
	long[5] = engine.Example{Tokens: make([]int, 3000), Labels: make([]int, 3000)}
	if _, err := runJob(t, trainertest.Setup{NewEngine: s.NewEngine, Train: long, Options: s.Options, LoRA: s.LoRA}, t.TempDir(), nil); err == nil ||
		!strings.Contains(err.Error(), "example 5: 3000 tokens exceed training.sequence_len 2048") {
		t.Errorf("long example: %v", err)
	}
	unlabelled := append([]engine.Example(nil), s.Train...)
	unlabelled[2] = engine.Example{Tokens: []int{4, 5}, Labels: []int{engine.IgnoreIndex, engine.IgnoreIndex}}
	if _, err := runJob(t, trainertest.Setup{NewEngine: s.NewEngine, Train: unlabelled, Options: s.Options, LoRA: s.LoRA}, t.TempDir(), nil); err == nil ||
		!strings.Contains(err.Error(), "example 2 has no labelled token") {
		t.Errorf("unlabelled example: %v", err)
	}
	if _, err := runJob(t, s, t.TempDir(), func(j *trainer.Job) { j.Engine = noParams{j.Engine} }); err == nil ||
		!strings.Contains(err.Error(), "no trainable tensors") {
		t.Errorf("engine without params: %v", err)
	}
}

type noParams struct{ engine.Trainer }

func (noParams) Params() []*engine.Param { return nil }

// TestOutputs: final/ and best/ are PEFT adapters; final/ equals the
// engine's adapter; the last checkpoint's state records the run.
func TestOutputs(t *testing.T) {
	s := setup(t)
	out := trainertest.Train(t, s, t.TempDir())
	_, ps, err := lora.Load(out.Summary.FinalAdapter)
	if err != nil {
		t.Fatal(err)
	}
	if err := trainertest.SameBits(out.Params, ps); err != nil {
		t.Errorf("final adapter: %v", err)
	}
	if _, _, err := lora.Load(out.Summary.BestAdapter); err != nil {
		t.Errorf("best adapter: %v", err)
	}
	ck, err := checkpoints.Load(out.Summary.LastCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	var st trainer.State
	if err := json.Unmarshal(ck.State, &st); err != nil {
		t.Fatal(err)
	}
	if st.Step != 9 || st.Micro != 0 || st.AdamStep != 9 || st.Epoch != 3 || st.TotalSteps != 9 || st.Seed != 42 || st.Fingerprint["train_examples"] == "" {
		t.Errorf("state %+v", st)
	}
	if string(ck.Config) != "seed: 1\n" {
		t.Errorf("config copy %q", ck.Config)
	}
	if len(ck.Tensors) != 4 { // exp_avg and exp_avg_sq of A and B; no partial gradients at a boundary
		t.Errorf("optimizer tensors %d, want 4", len(ck.Tensors))
	}
}
