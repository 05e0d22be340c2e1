// Package distributed holds what data-parallel training needs below the
// trainer: which process this is (Detect reads torchrun's, Open MPI's or
// Slurm's variables), where rank 0 waits (Endpoint: MASTER_ADDR and
// MASTER_PORT), and a Communicator (all-reduce, barrier, broadcast) in three
// forms: Single (one process), NewLocal (goroutine ranks, for tests and
// checks without a cluster) and ConnectTCP (one process per rank over TCP
// through rank 0, for CPU data-parallel runs and for the rendezvous that
// hands NCCL's unique id to every rank: Rendezvous).
//
// Every all-reduce sums in rank order, x0 + x1 + ... + x(n-1), in the
// slice's own precision, and every rank gets the same bits; the TCP and
// in-process forms give the same result for the same inputs.
//
// Nothing here reads the process environment itself: callers pass a lookup
// function (os.LookupEnv in the command, a map in tests).
package distributed

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Lookup reads one environment variable, like os.LookupEnv.
type Lookup func(key string) (string, bool)

// Launch says which process of a job this is.
type Launch struct {
	Rank      int // 0..Size-1; rank 0 logs, evaluates and writes checkpoints
	Size      int // world size: processes in the job
	LocalRank int // rank among the processes on this node (GPU selection)
	// Launcher is "torchrun", "openmpi", "slurm", or "" for a plain single
	// process; Vars names the variables read, for the log.
	Launcher string
	Vars     string
}

// launchers lists the variable triples in the order Detect tries them:
// torchrun's first (torchrun inside an sbatch allocation sets both its own
// and Slurm's), then Open MPI's (mpirun under Slurm likewise), then srun's.
var launchers = []struct{ name, rank, size, local string }{
	{"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
	{"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
	{"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
}

// Detect finds this process's rank, world size and local rank from the
// first launcher whose variables are present: torchrun (RANK, WORLD_SIZE,
// LOCAL_RANK), Open MPI (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK) or Slurm's
// srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID). With none of them it is a
// single process (rank 0 of 1). A launcher with only some of its three
// variables, a value that is not an integer, or a rank outside the world
// size is an error naming the variables.
//
// Note for Slurm: an sbatch script itself has SLURM_PROCID=0 and
// SLURM_NTASKS=N; start one process per task with srun, or the other ranks
// never arrive (ConnectTCP then times out saying which).
func Detect(lookup Lookup) (Launch, error) {
	for _, l := range launchers {
		set := 0
		for _, k := range []string{l.rank, l.size, l.local} {
			if v, ok := lookup(k); ok && strings.TrimSpace(v) != "" {
				set++
			}
		}
		if set == 0 {
			continue
		}
		rank, err1 := intVar(lookup, l.rank)
		size, err2 := intVar(lookup, l.size)
		local, err3 := intVar(lookup, l.local)
		for _, err := range []error{err1, err2, err3} {
			if err != nil {
				return Launch{}, fmt.Errorf("%s launch (%s, %s, %s): %w", l.name, l.rank, l.size, l.local, err)
			}
		}
		vars := fmt.Sprintf("%s=%d %s=%d %s=%d", l.rank, rank, l.size, size, l.local, local)
		switch {
		case size < 1:
			return Launch{}, fmt.Errorf("%s launch (%s): the world size must be at least 1", l.name, vars)
		case rank >= size:
			return Launch{}, fmt.Errorf("%s launch (%s): the rank must be below the world size", l.name, vars)
		case local >= size:
			return Launch{}, fmt.Errorf("%s launch (%s): the local rank must be below the world size", l.name, vars)
		}
		return Launch{Rank: rank, Size: size, LocalRank: local, Launcher: l.name, Vars: vars}, nil
	}
	return Launch{Rank: 0, Size: 1, LocalRank: 0}, nil
}

// DeviceIndex is the GPU this rank should use: 0 when CUDA_VISIBLE_DEVICES
// leaves it a single device (Slurm's --gpus-per-task, Kubernetes'
// nvidia.com/gpu: 1), else its local rank (torchrun, srun with every GPU of
// the node visible).
func (l Launch) DeviceIndex(lookup Lookup) int {
	if v, ok := lookup("CUDA_VISIBLE_DEVICES"); ok {
		v = strings.TrimSpace(v)
		if v != "" && !strings.Contains(v, ",") {
			return 0
		}
	}
	return l.LocalRank
}

// Endpoint is rank 0's address "host:port" from MASTER_ADDR and
// MASTER_PORT (what torchrun and torch's TCPStore read); each missing or
// malformed variable is named in the error.
func Endpoint(lookup Lookup) (string, error) {
	addr, okA := lookup("MASTER_ADDR")
	port, okP := lookup("MASTER_PORT")
	addr, port = strings.TrimSpace(addr), strings.TrimSpace(port)
	var missing []string
	if !okA || addr == "" {
		missing = append(missing, "MASTER_ADDR")
	}
	if !okP || port == "" {
		missing = append(missing, "MASTER_PORT")
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("rank 0's address: %s not set (the job script exports the first node's name and a free port, e.g. MASTER_PORT=29500)", strings.Join(missing, " and "))
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("MASTER_PORT=%q: want a port number 1..65535", port)
	}
	return net.JoinHostPort(addr, strconv.Itoa(p)), nil
}

func intVar(lookup Lookup, key string) (int, error) {
	v, ok := lookup(key)
	if !ok || strings.TrimSpace(v) == "" {
		return 0, fmt.Errorf("%s is not set", key)
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a non-negative integer", key, v)
	}
	return n, nil
}
