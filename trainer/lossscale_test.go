package trainer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/rella-project/rella/checkpoints"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

// stepRecord is one optimiser step of log.jsonl.
type stepRecord struct {
	Step      int      `json:"step"`
	GradNorm  *float64 `json:"grad_norm"`
	LossScale float64  `json:"loss_scale"`
	Skipped   bool     `json:"skipped"`
	AUC       *float64 `json:"auc"`
}

func readSteps(t *testing.T, dir string) []stepRecord {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, trainer.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []stepRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r stepRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.AUC == nil {
			out = append(out, r)
		}
	}
	return out
}

// overflowSetup is setup(t) with its engine wrapped in trainertest.Overflow
// (overflow above max) and loss scaling on (growth every interval steps).
func overflowSetup(t *testing.T, max float64, interval int, scaling bool) (trainertest.Setup, *[]*trainertest.Overflow) {
	s := setup(t)
	var engines []*trainertest.Overflow
	s.Wrap = func(eng engine.Trainer) engine.Trainer {
		o := trainertest.NewOverflow(eng, max)
		engines = append(engines, o)
		return o
	}
	if scaling {
		s.LossScaling = trainer.DefaultLossScaling()
		s.LossScaling.Interval = interval
	}
	return s, &engines
}

// TestLossScalingWithoutOverflowIsExact: scaling by powers of two is exact
// in float32, so a scaled run whose gradients never overflow (but whose
// scale grows every 2 steps, up to 2^20) must end bit for bit where the
// same run without scaling ends. This shows that the token normalisation,
// clipping (max_grad_norm 0.5 is active in setup) and AdamW see the
// unscaled gradients.
func TestLossScalingWithoutOverflowIsExact(t *testing.T) {
	plain, _ := overflowSetup(t, math.Inf(1), 2, false)
	scaled, engines := overflowSetup(t, math.Inf(1), 2, true)
	a := trainertest.Train(t, plain, t.TempDir())
	b := trainertest.Train(t, scaled, t.TempDir())
	if err := trainertest.SameBits(a.Params, b.Params); err != nil {
		t.Fatalf("scaled run differs from the unscaled one: %v", err)
	}
	steps := readSteps(t, b.Dir)
	if len(steps) != 9 {
		t.Fatalf("%d step records, want 9", len(steps))
	}
	want := 65536.0
	for i, r := range steps {
		if r.Skipped || r.LossScale != want {
			t.Errorf("step %d: loss_scale %v skipped %v, want %v and not skipped", r.Step, r.LossScale, r.Skipped, want)
		}
		if (i+1)%2 == 0 {
			want *= 2
		}
	}
	seen := (*engines)[0].Seen
	if len(seen) != 36 || seen[0] != 65536 || seen[35] != 65536*16 {
		t.Errorf("engine saw scales %v, want 36 calls from 65536 to 2^20", seen)
	}
}

// TestLossScalerSkipBackoffGrowth drives the scaler with an engine whose
// scaled gradients overflow above fp16's 65504: from 2^16 the first steps
// overflow and back off, growth every 2 finite steps overflows again. Each
// step's record is checked against GradScaler's update rule, skipped steps
// must leave the adapter and AdamW's step count unchanged, finite ones
// must change the adapter, and an injected NaN (no range overflow) must
// skip its step too.
func TestLossScalerSkipBackoffGrowth(t *testing.T) {
	s, engines := overflowSetup(t, 65504, 2, true)
	var snaps [][]float32
	s.Hooks = []trainer.Hook{{Name: "snap", Priority: 1, OnStart: func(_ context.Context, l *trainer.Loop) error {
		snaps = append(snaps, flat(l.Params()))
		return nil
	}, OnStep: func(_ context.Context, l *trainer.Loop, _ trainer.StepInfo) error {
		snaps = append(snaps, flat(l.Params()))
		return nil
	}}}
	var nanEngine *trainertest.Overflow
	wrap := s.Wrap
	s.Wrap = func(eng engine.Trainer) engine.Trainer {
		o := wrap(eng).(*trainertest.Overflow)
		o.NaNAt = map[int]bool{30: true} // step 8, third micro-batch
		nanEngine = o
		return o
	}
	out := trainertest.Train(t, s, t.TempDir())
	steps := readSteps(t, out.Dir)
	if len(steps) != 9 || len(snaps) != 10 {
		t.Fatalf("%d step records and %d snapshots, want 9 and 10", len(steps), len(snaps))
	}
	scale, good, skipped, grew := 65536.0, 0, 0, 0
	for i, r := range steps {
		if r.LossScale != scale {
			t.Fatalf("step %d: loss_scale %v, want %v (GradScaler's rule)", r.Step, r.LossScale, scale)
		}
		for k := 0; k < 4; k++ {
			if got := nanEngine.Seen[4*i+k]; got != scale {
				t.Fatalf("step %d micro-batch %d ran with scale %v, want %v", r.Step, k, got, scale)
			}
		}
		changed := !slices.Equal(snaps[i], snaps[i+1])
		if r.Skipped {
			skipped++
			if changed || r.GradNorm != nil {
				t.Errorf("step %d skipped, but the adapter changed (%v) or a grad_norm was logged (%v)", r.Step, changed, r.GradNorm)
			}
			scale, good = scale/2, 0
			continue
		}
		if !changed || r.GradNorm == nil {
			t.Errorf("step %d not skipped, but the adapter did not change or no grad_norm", r.Step)
		}
		if good++; good == 2 {
			scale, good = scale*2, 0
			grew++
		}
	}
	if skipped < 2 || grew < 1 || !steps[7].Skipped {
		t.Errorf("%d skipped steps, %d growths, step 8 (NaN) skipped %v; the test wants backoff, growth and the NaN skip", skipped, grew, steps[7].Skipped)
	}
	t.Logf("scales %v", func() (v []float64) {
		for _, r := range steps {
			v = append(v, r.LossScale)
		}
		return
	}())
	b, err := os.ReadFile(filepath.Join(out.Summary.LastCheckpoint, checkpoints.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st trainer.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.SkippedSteps != skipped || st.AdamStep != 9-skipped || st.LossScale != scale || st.LossScaleGood != good {
		t.Errorf("state.json: skipped %d adam_step %d loss_scale %v tracker %d, want %d %d %v %d",
			st.SkippedSteps, st.AdamStep, st.LossScale, st.LossScaleGood, skipped, 9-skipped, scale, good)
	}
	_ = engines
}

// TestResumeExactWithLossScaling: the scaler's state travels in the
// checkpoint, so interrupted runs whose scale backs off and grows resume
// bit for bit (cuts mid-window, where the saved partial gradients are
// still scaled, and at window ends).
func TestResumeExactWithLossScaling(t *testing.T) {
	s, _ := overflowSetup(t, 65504, 2, true)
	for _, cuts := range [][]trainertest.Cut{
		{{MicroBatches: 2}},
		{{MicroBatches: 4}},
		{{MicroBatches: 6}, {MicroBatches: 19}},
		{{Eval: 2}, {MicroBatches: 30}},
	} {
		trainertest.ResumeExact(t, s, cuts...)
	}
}

// TestLossScalingNeedsScaler: an engine that cannot scale its loss
// gradient is refused when loss scaling is on.
func TestLossScalingNeedsScaler(t *testing.T) {
	s := setup(t)
	j := trainer.Job{Engine: s.NewEngine(t), Train: s.Train, Options: s.Options, LoRA: s.LoRA, Dir: t.TempDir(),
		LossScaling: trainer.DefaultLossScaling()}
	if _, err := trainer.Run(context.Background(), j); err == nil {
		t.Fatal("a run with loss scaling on an engine without SetLossScale succeeded")
	}
	j.LossScaling.Backoff = 2
	j.Engine = trainertest.NewOverflow(s.NewEngine(t), math.Inf(1))
	if _, err := trainer.Run(context.Background(), j); err == nil {
		t.Fatal("backoff 2 accepted")
	}
}

func flat(ps []*engine.Param) []float32 {
	var v []float32
	for _, p := range ps {
		v = append(v, p.Value...)
	}
	return v
}

// TestDataParallelWithLossScaling: fp16 loss scaling under data-parallel
// training. Each rank's scaled partial gradients may overflow on their own;
// the ranks all-reduce first and then unscale and check the sum, so every
// rank skips the same steps and takes the same scale. With 2 and 4
// goroutine ranks (and a stop on one rank with a resume at another world
// size) the run ends bit for bit as the single-process reference that
// accumulates each step in the ranks' order, with steps skipped.
func TestDataParallelWithLossScaling(t *testing.T) {
	s, _ := overflowSetup(t, 65504, 2, true)
	for _, c := range []struct {
		name   string
		phases []trainertest.Phase
	}{
		{"2 ranks", []trainertest.Phase{{World: 2, StopRank: -1}}},
		{"4 ranks", []trainertest.Phase{{World: 4, StopRank: -1}}},
		{"4 ranks, stop on rank 2, resume with 2", []trainertest.Phase{{World: 4, StopRank: 2, StopAfter: 4}, {World: 2, StopRank: -1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			got, stops := trainertest.TrainParallel(t, s, filepath.Join(root, "dp"), nil, c.phases...)
			ref := s
			ref.ReferenceRanks = phaseWorlds(c.phases, stops)
			want := trainertest.Train(t, ref, filepath.Join(root, "reference"))
			trainertest.Compare(t, want, got)
			skipped := 0
			for _, r := range readSteps(t, got.Dir) {
				if r.Skipped {
					skipped++
				}
			}
			if skipped == 0 {
				t.Errorf("no step was skipped; the test wants overflows under data parallelism")
			}
		})
	}
}
