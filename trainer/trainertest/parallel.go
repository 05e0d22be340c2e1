package trainertest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/rella-project/rella/checkpoints"
	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/trainer"
)

// Phase is one launch of a data-parallel job: World goroutine ranks
// (distributed.NewLocal), each with a fresh engine. When StopRank >= 0 and
// StopAfter > 0, that rank's context is cancelled (as SIGTERM on that rank
// would) right after its StopAfter-th LossGrad call, and every rank must end
// with trainer.ErrInterrupted.
type Phase struct {
	World     int
	StopRank  int
	StopAfter int
}

// RankDirs, when set, gives rank r > 0 its own output folder (fresh runs
// only), so a test can check that those ranks write nothing.
type RankDirs func(rank int) string

// TrainParallel runs s in dir as a data-parallel job, one launch per phase
// (the later ones resume "auto" from the newest checkpoint, with their own
// world size). It returns rank 0's outcome of the last phase, the steps at
// which the interrupted phases stopped (their checkpoints' steps), and
// fails t unless every rank of every phase ends with the same adapter bits
// as rank 0.
func TrainParallel(t testing.TB, s Setup, dir string, rankDir RankDirs, phases ...Phase) (Outcome, []int) {
	t.Helper()
	var stops []int
	for i, ph := range phases {
		comms, err := distributed.NewLocal(ph.World)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			sum    *trainer.Summary
			params []*engine.Param
			err    error
		}
		res := make([]result, ph.World)
		var wg sync.WaitGroup
		for r := 0; r < ph.World; r++ {
			eng := s.NewEngine(t)
			if s.Wrap != nil {
				eng = s.Wrap(eng)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var run engine.Trainer = eng
			if r == ph.StopRank && ph.StopAfter > 0 {
				calls := 0
				c := &counting{Trainer: eng, calls: &calls, cancelAt: ph.StopAfter, cancel: cancel}
				run = c
				if sc, ok := eng.(engine.LossScaler); ok {
					run = &countingScaler{counting: c, scaler: sc}
				}
			}
			o := s.Options
			if i > 0 {
				o.ResumeFromCheckpoint = "auto"
			}
			d := dir
			if r > 0 && rankDir != nil {
				d = rankDir(r)
			}
			job := trainer.Job{Engine: run, Train: s.Train, Options: o, LoRA: s.LoRA, BaseModel: "test-model", Seed: s.Seed,
				Dir: d, Config: []byte("seed: 1\n"), Progress: io.Discard, Hooks: s.Hooks, LossScaling: s.LossScaling, Comm: comms[r]}
			if s.Evaluate != nil {
				job.Evaluate = s.Evaluate(eng)
			}
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				defer cancel()
				sum, err := trainer.Run(ctx, job)
				if err != nil && !errors.Is(err, trainer.ErrInterrupted) {
					comms[r].Close() // a failed rank must not leave the others waiting
				}
				res[r] = result{sum, eng.Params(), err}
			}(r)
		}
		wg.Wait()
		stopped := ph.StopAfter > 0 && ph.StopRank >= 0
		for r, x := range res {
			switch {
			case stopped && !errors.Is(x.err, trainer.ErrInterrupted):
				t.Fatalf("phase %d (%+v), rank %d: got %v, want trainer.ErrInterrupted", i, ph, r, x.err)
			case !stopped && x.err != nil:
				t.Fatalf("phase %d (%+v), rank %d: %v", i, ph, r, x.err)
			}
			if err := SameBits(res[0].params, x.params); err != nil {
				t.Fatalf("phase %d: rank %d's adapter differs from rank 0's: %v", i, r, err)
			}
		}
		if stopped {
			c, ok, err := checkpoints.Latest(dir, slog.New(slog.DiscardHandler))
			if err != nil || !ok {
				t.Fatalf("phase %d: no checkpoint after the stop: %v", i, err)
			}
			stops = append(stops, c.Step)
			continue
		}
		if i != len(phases)-1 {
			t.Fatalf("phase %d ran to the end; only the last phase may", i)
		}
		return Outcome{Params: res[0].params, Summary: res[0].sum, Dir: dir}, stops
	}
	t.Fatal("the last phase was interrupted")
	return Outcome{}, nil
}
