package main

import (
	"context"
	"fmt"
	"time"

	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/internal/runlock"
	"github.com/rella-project/rella/pipeline"
)

// launchOf reads which process of a data-parallel job this is (torchrun's,
// Open MPI's or Slurm's srun variables; a plain process is rank 0 of 1).
func launchOf(e *env) (distributed.Launch, error) {
	l, err := distributed.Detect(e.getenv)
	if err != nil {
		return l, fmt.Errorf("data-parallel launch: %w", err)
	}
	return l, nil
}

// claimRank is claim for one rank of a data-parallel job: rank 0 (and a
// single process) takes the output folder's lock; the other ranks, which
// write nothing there, lock OUTPUT_DIR/.rella.lock.rank-RRRRR-of-NNNNN, so a
// second copy of the same rank is refused while the job runs.
func claimRank(e *env, r *pipeline.Runner, name string, args []string, n needs, l distributed.Launch) (func(), error) {
	if l.Rank == 0 {
		return claim(e, r, name, args, n)
	}
	lock, err := runlock.AcquireFile(r.Cfg.OutputDir, fmt.Sprintf("%s.rank-%05d-of-%05d", runlock.FileName, l.Rank, l.Size), e.commandLine(name, args))
	if err != nil {
		return nil, fmt.Errorf("output_dir: rank %d: %w", l.Rank, err)
	}
	release := func() { lock.Release() }
	if n.model {
		if err := checkModel(r); err != nil {
			release()
			return nil, err
		}
	}
	return release, nil
}

// connect joins the data-parallel group of launch l (world size > 1): a TCP
// group through rank 0 at MASTER_ADDR:MASTER_PORT and, with model.device=gpu
// in a GPU build, NCCL for the gradient all-reduce (its unique id handed
// over that TCP group), unless RELLA_NCCL=0 keeps the all-reduce on TCP.
// It sets model.device_index to the rank's GPU.
func connect(ctx context.Context, e *env, r *pipeline.Runner, l distributed.Launch) (distributed.Communicator, error) {
	addr, err := distributed.Endpoint(e.getenv)
	if err != nil {
		return nil, fmt.Errorf("data-parallel training (%s, rank %d of %d): %w", l.Launcher, l.Rank, l.Size, err)
	}
	timeout := distributed.DefaultTimeout
	if v, ok := e.getenv("RELLA_RENDEZVOUS_TIMEOUT"); ok && v != "" {
		if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
			return nil, fmt.Errorf("RELLA_RENDEZVOUS_TIMEOUT=%q: want a duration such as 10m", v)
		}
	}
	e.log.Info("data-parallel training: joining the group", "launcher", l.Launcher, "vars", l.Vars, "rank", l.Rank, "world", l.Size, "master", addr)
	ctl, err := distributed.ConnectTCP(ctx, distributed.TCPOptions{Addr: addr, Rank: l.Rank, Size: l.Size, Timeout: timeout, Log: e.log})
	if err != nil {
		return nil, fmt.Errorf("data-parallel training: %w", err)
	}
	if r.Cfg.Model.Device != "gpu" {
		return ctl, nil
	}
	r.Cfg.Model.DeviceIndex = l.DeviceIndex(e.getenv)
	if v, _ := e.getenv("RELLA_NCCL"); v == "0" {
		e.log.Info("data-parallel training: RELLA_NCCL=0: gradients all-reduced over TCP")
		return ctl, nil
	}
	comm, err := ncclGroup(ctx, ctl, r.Cfg.Model.DeviceIndex, e)
	if err != nil {
		ctl.Close()
		return nil, err
	}
	return comm, nil
}
