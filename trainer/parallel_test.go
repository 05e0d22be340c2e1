package trainer_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

// issue 14: W goroutine ranks (distributed.NewLocal) end with bit for bit
// the adapter, optimiser state, checkpoints, best adapter and log of a single
// process that accumulates each step as W would-be ranks' partial sums added
// in rank order (Job.ReferenceRanks). With the in-process group's float32
// sums in rank order that reference is exact; the only difference from the
// plain sequential single process is the association of the gradient sums.
func TestDataParallelMatchesReference(t *testing.T) {
	s := setup(t) // 4 micro-batches per step, the last of each step smaller
	for _, w := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(w, " ranks"), func(t *testing.T) {
			root := t.TempDir()
			ref := s
			ref.ReferenceRanks = func(int) int { return w }
			want := trainertest.Train(t, ref, filepath.Join(root, "reference"))
			own := func(r int) string { return filepath.Join(root, fmt.Sprint("rank", r)) }
			got, _ := trainertest.TrainParallel(t, s, filepath.Join(root, "dp"), own, trainertest.Phase{World: w, StopRank: -1})
			trainertest.Compare(t, want, got)
			for r := 1; r < w; r++ { // ranks > 0 write nothing
				if es, _ := os.ReadDir(own(r)); len(es) > 0 {
					t.Errorf("rank %d wrote %d files into its output folder, e.g. %s", r, len(es), es[0].Name())
				}
			}
		})
	}
	// A group of one rank takes the data-parallel path (collectives every
	// step) and ends exactly as the plain single process.
	plain := trainertest.Train(t, s, filepath.Join(t.TempDir(), "plain"))
	one, _ := trainertest.TrainParallel(t, s, filepath.Join(t.TempDir(), "one"), nil, trainertest.Phase{World: 1, StopRank: -1})
	trainertest.Compare(t, plain, one)
}

// The token-normalised loss of a data-parallel step is the single-process
// loss of the same global batch: at step 1 (same adapter) they agree to
// float64 rounding of the reassociated loss sums.
func TestDataParallelLossIsGlobalBatchLoss(t *testing.T) {
	s := setup(t)
	s.Options.MaxSteps = 1
	plain := trainertest.Train(t, s, filepath.Join(t.TempDir(), "plain"))
	for _, w := range []int{2, 4} {
		got, _ := trainertest.TrainParallel(t, s, filepath.Join(t.TempDir(), "dp"), nil, trainertest.Phase{World: w, StopRank: -1})
		a, b := plain.Summary.Loss, got.Summary.Loss
		if math.Abs(a-b) > 1e-12*math.Abs(a) || a == 0 {
			t.Errorf("%d ranks: step-1 loss %v, single process %v", w, b, a)
		}
	}
}

// SIGTERM on one rank (its context cancelled mid-step) stops every rank
// after that step with one checkpoint by rank 0; resuming with the same or
// another world size ends exactly as the reference with that world size
// before and after the stop.
func TestDataParallelStopAndResume(t *testing.T) {
	s := setup(t)
	for _, c := range []struct {
		name   string
		phases []trainertest.Phase
	}{
		{"2 ranks, stop on rank 1, resume with 2", []trainertest.Phase{{World: 2, StopRank: 1, StopAfter: 3}, {World: 2, StopRank: -1}}},
		{"4 ranks, stop on rank 0, resume with 2", []trainertest.Phase{{World: 4, StopRank: 0, StopAfter: 5}, {World: 2, StopRank: -1}}},
		{"2 ranks, stop twice, resume with 4 then 1", []trainertest.Phase{{World: 2, StopRank: 1, StopAfter: 2}, {World: 4, StopRank: 3, StopAfter: 3}, {World: 1, StopRank: -1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			got, stops := trainertest.TrainParallel(t, s, filepath.Join(root, "dp"), nil, c.phases...)
			ref := s
			ref.ReferenceRanks = phaseWorlds(c.phases, stops)
			want := trainertest.Train(t, ref, filepath.Join(root, "reference"))
			trainertest.Compare(t, want, got)
			t.Logf("stopped at steps %v", stops)
		})
	}
}

// Ranks that start from different adapters (another initialisation seed on
// rank 1) are refused before the first step, on every rank.
func TestDataParallelRefusesDifferentStarts(t *testing.T) {
	s := setup(t)
	comms, err := distributed.NewLocal(2)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		eng := trainertest.NewLinear(vocab, 5, s.LoRA, uint64(11+r))
		job := trainer.Job{Engine: eng, Train: s.Train, Options: s.Options, LoRA: s.LoRA, BaseModel: "m", Seed: s.Seed,
			Dir: filepath.Join(t.TempDir(), "run"), Progress: io.Discard, Comm: comms[r]}
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			_, errs[r] = trainer.Run(context.Background(), job)
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "start from another adapter") {
			t.Errorf("rank %d: got %v, want a refusal naming the different start", r, err)
		}
	}
}

// A single-process checkpoint taken in the middle of an accumulation window
// does not resume data-parallel (its partial gradients belong to one
// process's micro-batches); the error says what to do.
func TestDataParallelRefusesMidWindowCheckpoint(t *testing.T) {
	s := setup(t)
	dir := filepath.Join(t.TempDir(), "run")
	interruptOnce(t, s, dir, 2) // checkpoint-0-m2
	comms, err := distributed.NewLocal(2)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		o := s.Options
		o.ResumeFromCheckpoint = "auto"
		eng := s.NewEngine(t)
		job := trainer.Job{Engine: eng, Train: s.Train, Options: o, LoRA: s.LoRA, BaseModel: "test-model", Seed: s.Seed,
			Dir: dir, Progress: io.Discard, Comm: comms[r], Evaluate: s.Evaluate(eng)}
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			_, errs[r] = trainer.Run(context.Background(), job)
			if errs[r] != nil {
				comms[r].Close()
			}
		}(r)
	}
	wg.Wait()
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "step boundary") {
		t.Errorf("rank 0: got %v, want a refusal of the mid-window checkpoint", errs[0])
	}
	if errs[1] == nil {
		t.Error("rank 1 went on alone")
	}
}

// phaseWorlds is Job.ReferenceRanks for a run in phases that stopped at
// the given steps: the world size of the phase that ran each step.
func phaseWorlds(phases []trainertest.Phase, stops []int) func(step int) int {
	return func(step int) int {
		for i, at := range stops {
			if step < at {
				return phases[i].World
			}
		}
		return phases[len(stops)].World
	}
}
