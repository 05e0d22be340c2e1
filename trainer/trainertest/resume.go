package trainertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
)

// Evaluator scores prompts with eng as ReLLa does, p = softmax([l_No,
// l_Yes])[1] at the last prompt token, for the given answer token ids, and
// computes the metrics against labels (1 = yes).
func Evaluator(eng engine.Engine, prompts [][]int, labels []int, no, yes int) trainer.Evaluator {
	return func(ctx context.Context) (metrics.Result, error) {
		if err := ctx.Err(); err != nil {
			return metrics.Result{}, err
		}
		ls, err := eng.LastLogits(ctx, prompts, []int{no, yes})
		if err != nil {
			return metrics.Result{}, err
		}
		p := make([]float64, len(ls))
		for i, l := range ls {
			p[i] = 1 / (1 + math.Exp(float64(l[0])-float64(l[1])))
		}
		return metrics.Compute(labels, p), nil
	}
}

// Setup is one training run for ResumeExact.
type Setup struct {
	// NewEngine returns a fresh engine; every call must start from the same
	// adapter values (as a new process loading the same model would).
	NewEngine func(t testing.TB) engine.Trainer
	Train     []engine.Example
	Options   trainer.Options
	LoRA      lora.Options
	Seed      uint64
	// Evaluate, when non-nil, builds the evaluator of an engine.
	Evaluate func(eng engine.Trainer) trainer.Evaluator
	// Hooks are added to every run.
	Hooks []trainer.Hook
	// Wrap, when non-nil, wraps each run's engine (to record or alter calls).
	Wrap func(eng engine.Trainer) engine.Trainer
	// LossScaling is passed to every run (the engine, after Wrap, must be
	// an engine.LossScaler when it is enabled: see Overflow).
	LossScaling trainer.LossScaling
	// ReferenceRanks is copied into every run's Job (single process: the
	// reduction order of a data-parallel run of that many ranks).
	ReferenceRanks func(step int) int
}

// Cut is one interruption: the context is cancelled right after the
// MicroBatches-th LossGrad call of the whole run (counted across resumes),
// or, when Eval > 0, during the Eval-th evaluation of the whole run.
type Cut struct {
	MicroBatches int
	Eval         int
}

// Outcome is what a run left behind, for comparison.
type Outcome struct {
	Params  []*engine.Param
	Summary *trainer.Summary
	Dir     string
}

// counting wraps an engine and cancels a context after a given LossGrad call.
type counting struct {
	engine.Trainer
	mu       sync.Mutex
	calls    *int
	cancelAt int
	cancel   context.CancelFunc
}

func (c *counting) LossGrad(ctx context.Context, batch []engine.Example, seed uint64) (float64, int, error) {
	l, n, err := c.Trainer.LossGrad(ctx, batch, seed)
	c.mu.Lock()
	defer c.mu.Unlock()
	*c.calls++
	if c.cancelAt > 0 && *c.calls == c.cancelAt {
		c.cancel()
	}
	return l, n, err
}

// countingScaler is counting for an engine that scales the loss.
type countingScaler struct {
	*counting
	scaler engine.LossScaler
}

func (c *countingScaler) SetLossScale(s float64) { c.scaler.SetLossScale(s) }

// Train runs s to the end in dir, cancelling at each cut in turn and
// resuming ("auto") with a fresh engine each time. It fails t when an
// interrupted run does not report trainer.ErrInterrupted.
func Train(t testing.TB, s Setup, dir string, cuts ...Cut) Outcome {
	t.Helper()
	calls, evals := 0, 0
	for i := 0; ; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		eng := s.NewEngine(t)
		if s.Wrap != nil {
			eng = s.Wrap(eng)
		}
		var cut Cut
		if i < len(cuts) {
			cut = cuts[i]
		}
		var wrapped engine.Trainer = &counting{Trainer: eng, calls: &calls, cancelAt: cut.MicroBatches, cancel: cancel}
		if sc, ok := eng.(engine.LossScaler); ok {
			wrapped = &countingScaler{counting: wrapped.(*counting), scaler: sc}
		}
		o := s.Options
		if i > 0 {
			o.ResumeFromCheckpoint = "auto"
		}
		job := trainer.Job{Engine: wrapped, Train: s.Train, Options: o, LoRA: s.LoRA, BaseModel: "test-model", Seed: s.Seed,
			Dir: dir, Config: []byte("seed: 1\n"), Progress: io.Discard, Hooks: s.Hooks, LossScaling: s.LossScaling, ReferenceRanks: s.ReferenceRanks}
		if s.Evaluate != nil {
			ev := s.Evaluate(eng)
			job.Evaluate = func(ctx context.Context) (metrics.Result, error) {
				evals++
				if cut.Eval > 0 && evals == cut.Eval {
					cancel()
				}
				return ev(ctx)
			}
		}
		sum, err := trainer.Run(ctx, job)
		cancel()
		if i < len(cuts) {
			if !errors.Is(err, trainer.ErrInterrupted) {
				t.Fatalf("run %d (cut %+v): got error %v, want trainer.ErrInterrupted", i, cut, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		return Outcome{Params: eng.Params(), Summary: sum, Dir: dir}
	}
}

// ResumeExact trains s once without interruption and once with every cut
// (each resumed from the newest checkpoint with a fresh engine), and fails t
// unless both end with bit-identical adapter values, identical AdamW
// moments, identical final state.json, the same best adapter, and the same
// log.jsonl (apart from timings).
func ResumeExact(t testing.TB, s Setup, cuts ...Cut) {
	t.Helper()
	root := t.TempDir()
	a := Train(t, s, filepath.Join(root, "straight"))
	b := Train(t, s, filepath.Join(root, "interrupted"), cuts...)
	Compare(t, a, b)
}

// Compare fails t unless the run b ended exactly as the run a: bit-identical
// adapter values, summaries, last checkpoints (adapter, AdamW moments,
// state.json, trainer_state.json), best adapters, trainer_state.json and
// logs (apart from timings).
func Compare(t testing.TB, a, b Outcome) {
	t.Helper()
	if err := SameBits(a.Params, b.Params); err != nil {
		t.Fatalf("resumed run differs from the uninterrupted one: %v", err)
	}
	if a.Summary.Steps != b.Summary.Steps || a.Summary.BestStep != b.Summary.BestStep || a.Summary.Stopped != b.Summary.Stopped ||
		math.Float64bits(a.Summary.Loss) != math.Float64bits(b.Summary.Loss) {
		t.Errorf("summaries differ: uninterrupted %+v, resumed %+v", *a.Summary, *b.Summary)
	}
	ca, cb := filepath.Base(a.Summary.LastCheckpoint), filepath.Base(b.Summary.LastCheckpoint)
	if ca != cb {
		t.Fatalf("last checkpoints differ: %s vs %s", ca, cb)
	}
	for _, f := range []string{checkpoints.OptimizerFile, checkpoints.StateFile, filepath.Join(checkpoints.AdapterDir, lora.WeightsFile)} {
		sameFile(t, filepath.Join(a.Summary.LastCheckpoint, f), filepath.Join(b.Summary.LastCheckpoint, f))
	}
	// trainer_state.json, in the folder and in the last checkpoint, names
	// paths inside the run's folder: compare with those folders masked.
	for _, d := range []string{"", filepath.Base(a.Summary.LastCheckpoint)} {
		x, y := readMasked(t, filepath.Join(a.Dir, d, trainer.TrainerStateFile), a.Dir), readMasked(t, filepath.Join(b.Dir, d, trainer.TrainerStateFile), b.Dir)
		if x != y {
			t.Errorf("%s differs:\nuninterrupted:\n%s\nresumed:\n%s", filepath.Join(d, trainer.TrainerStateFile), x, y)
		}
	}
	if a.Summary.HasBest {
		sameFile(t, filepath.Join(a.Dir, "best", lora.WeightsFile), filepath.Join(b.Dir, "best", lora.WeightsFile))
	}
	la, lb := logRecords(t, a.Dir), logRecords(t, b.Dir)
	if la != lb {
		t.Errorf("log.jsonl differs (timings removed):\nuninterrupted:\n%s\nresumed:\n%s", la, lb)
	}
}

// readMasked returns the file at path with every occurrence of dir (as
// JSON writes it) replaced by "OUTPUT_DIR".
func readMasked(t testing.TB, path, dir string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := json.Marshal(dir)
	return strings.ReplaceAll(string(b), strings.Trim(string(q), `"`), "OUTPUT_DIR")
}

func sameFile(t testing.TB, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ:\n%s\n%s", a, b, x, y)
	}
}

// logRecords returns log.jsonl without tokens_per_s, one record per line.
func logRecords(t testing.TB, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, trainer.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log.jsonl: %v: %s", err, line)
		}
		delete(rec, "tokens_per_s")
		j, _ := json.Marshal(rec)
		out.Write(j)
		out.WriteByte('\n')
	}
	return out.String()
}

// SameBits reports the first element where two parameter lists differ in
// their float32 bits.
func SameBits(a, b []*engine.Param) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d tensors vs %d", len(a), len(b))
	}
	for i := range a {
		if a[i].Name != b[i].Name || len(a[i].Value) != len(b[i].Value) {
			return fmt.Errorf("tensor %d: %s (%d values) vs %s (%d values)", i, a[i].Name, len(a[i].Value), b[i].Name, len(b[i].Value))
		}
		for j := range a[i].Value {
			if math.Float32bits(a[i].Value[j]) != math.Float32bits(b[i].Value[j]) {
				return fmt.Errorf("%s[%d]: got %v (bits %08x), want %v (bits %08x)", b[i].Name, j, b[i].Value[j],
					math.Float32bits(b[i].Value[j]), a[i].Value[j], math.Float32bits(a[i].Value[j]))
			}
		}
	}
	return nil
}
