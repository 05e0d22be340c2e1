package distributed

import (
	"strings"
	"testing"
)

func env(kv ...string) Lookup {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDetect(t *testing.T) {
	ok := []struct {
		name string
		env  Lookup
		want Launch
	}{
		{"none", env("SLURM_JOB_ID", "7"), Launch{Rank: 0, Size: 1}},
		{"torchrun", env("RANK", "3", "WORLD_SIZE", "8", "LOCAL_RANK", "3", "LOCAL_WORLD_SIZE", "4"), Launch{3, 8, 3, "torchrun", "RANK=3 WORLD_SIZE=8 LOCAL_RANK=3"}},
		{"openmpi", env("OMPI_COMM_WORLD_RANK", "5", "OMPI_COMM_WORLD_SIZE", "6", "OMPI_COMM_WORLD_LOCAL_RANK", "1"), Launch{5, 6, 1, "openmpi", "OMPI_COMM_WORLD_RANK=5 OMPI_COMM_WORLD_SIZE=6 OMPI_COMM_WORLD_LOCAL_RANK=1"}},
		{"slurm", env("SLURM_PROCID", "2", "SLURM_NTASKS", "4", "SLURM_LOCALID", "0"), Launch{2, 4, 0, "slurm", "SLURM_PROCID=2 SLURM_NTASKS=4 SLURM_LOCALID=0"}},
		{"torchrun under slurm", env("RANK", "1", "WORLD_SIZE", "2", "LOCAL_RANK", "1", "SLURM_PROCID", "0", "SLURM_NTASKS", "1", "SLURM_LOCALID", "0"), Launch{1, 2, 1, "torchrun", "RANK=1 WORLD_SIZE=2 LOCAL_RANK=1"}},
		{"mpirun under slurm", env("OMPI_COMM_WORLD_RANK", "1", "OMPI_COMM_WORLD_SIZE", "2", "OMPI_COMM_WORLD_LOCAL_RANK", "0", "SLURM_PROCID", "0", "SLURM_NTASKS", "1", "SLURM_LOCALID", "0"), Launch{1, 2, 0, "openmpi", "OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_RANK=0"}},
	}
	for _, c := range ok {
		got, err := Detect(c.env)
		if err != nil || got != c.want {
			t.Errorf("%s: Detect = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	bad := []struct {
		name string
		env  Lookup
		say  []string
	}{
		{"rank only", env("RANK", "0"), []string{"torchrun", "WORLD_SIZE is not set"}},
		{"no local rank", env("RANK", "0", "WORLD_SIZE", "2"), []string{"LOCAL_RANK is not set"}},
		{"rank past size", env("RANK", "2", "WORLD_SIZE", "2", "LOCAL_RANK", "0"), []string{"RANK=2 WORLD_SIZE=2", "below the world size"}},
		{"zero size", env("SLURM_PROCID", "0", "SLURM_NTASKS", "0", "SLURM_LOCALID", "0"), []string{"SLURM_NTASKS=0", "at least 1"}},
		{"not a number", env("OMPI_COMM_WORLD_RANK", "one", "OMPI_COMM_WORLD_SIZE", "2", "OMPI_COMM_WORLD_LOCAL_RANK", "0"), []string{`OMPI_COMM_WORLD_RANK="one"`}},
		{"slurm partial", env("SLURM_PROCID", "1", "SLURM_LOCALID", "1"), []string{"SLURM_NTASKS is not set"}},
		{"local past size", env("RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "2"), []string{"LOCAL_RANK=2", "local rank"}},
	}
	for _, c := range bad {
		got, err := Detect(c.env)
		if err == nil {
			t.Errorf("%s: Detect = %+v, want an error", c.name, got)
			continue
		}
		for _, s := range c.say {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not say %q", c.name, err, s)
			}
		}
	}
}

func TestDeviceIndex(t *testing.T) {
	l := Launch{Rank: 5, Size: 8, LocalRank: 1}
	for _, c := range []struct {
		env  Lookup
		want int
	}{{env(), 1}, {env("CUDA_VISIBLE_DEVICES", "3"), 0}, {env("CUDA_VISIBLE_DEVICES", "0,1,2,3"), 1}, {env("CUDA_VISIBLE_DEVICES", ""), 1}} {
		if got := l.DeviceIndex(c.env); got != c.want {
			t.Errorf("DeviceIndex = %d, want %d", got, c.want)
		}
	}
}

func TestEndpoint(t *testing.T) {
	if got, err := Endpoint(env("MASTER_ADDR", "node017", "MASTER_PORT", "29500")); err != nil || got != "node017:29500" {
		t.Errorf("Endpoint = %q, %v", got, err)
	}
	if got, err := Endpoint(env("MASTER_ADDR", "fe80::1", "MASTER_PORT", "29500")); err != nil || got != "[fe80::1]:29500" {
		t.Errorf("Endpoint(IPv6) = %q, %v", got, err)
	}
	for _, c := range []struct {
		env Lookup
		say string
	}{
		{env(), "MASTER_ADDR and MASTER_PORT not set"},
		{env("MASTER_ADDR", "n1"), "MASTER_PORT not set"},
		{env("MASTER_PORT", "1"), "MASTER_ADDR not set"},
		{env("MASTER_ADDR", "n1", "MASTER_PORT", "70000"), `MASTER_PORT="70000"`},
	} {
		if _, err := Endpoint(c.env); err == nil || !strings.Contains(err.Error(), c.say) {
			t.Errorf("Endpoint error %v, want %q", err, c.say)
		}
	}
}
