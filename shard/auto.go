package shard

import (
	"fmt"
	"strconv"
	"strings"
)

// Lookup reads one environment variable, like os.LookupEnv.
type Lookup func(key string) (string, bool)

// CountEnv is the variable a job template sets to the number of shards when
// the launcher does not say it (a Kubernetes Indexed Job gives each pod only
// its JOB_COMPLETION_INDEX).
const CountEnv = "RELLA_SHARDS"

// Auto finds this process's shard from the launcher's variables, for
// "--shard auto". count is the --shards flag (0 when not given). Tried in
// this order, the first that is present wins:
//
//   - Slurm job arrays: SLURM_ARRAY_TASK_ID, with SLURM_ARRAY_TASK_MIN and
//     SLURM_ARRAY_TASK_MAX (I = ID-MIN, N = MAX-MIN+1) and/or
//     SLURM_ARRAY_TASK_COUNT (N; I = ID when MIN is not set). Arrays with a
//     step or gaps (--array=0-15:2, --array=1,4) are refused: their task IDs
//     are not the shard indices.
//   - Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX with N from count or
//     RELLA_SHARDS (the template sets it to the Job's completions).
//   - torchrun and similar: RANK and WORLD_SIZE.
//
// When count or RELLA_SHARDS is given it must agree with the launcher's N.
// The returned string says where I and N came from, for the log. Errors name
// the variables that are missing or inconsistent.
func Auto(lookup Lookup, count int) (Spec, string, error) {
	want, wantFrom, err := expectedCount(lookup, count)
	if err != nil {
		return Spec{}, "", err
	}
	var sp Spec
	var from string
	switch {
	case has(lookup, "SLURM_ARRAY_TASK_ID"):
		sp, from, err = slurmArray(lookup)
	case has(lookup, "JOB_COMPLETION_INDEX"):
		var i int
		if i, err = intVar(lookup, "JOB_COMPLETION_INDEX"); err != nil {
			break
		}
		if want == 0 {
			err = fmt.Errorf("JOB_COMPLETION_INDEX=%d is set but not the number of shards: pass --shards N or set %s to the Job's completions", i, CountEnv)
			break
		}
		sp = Spec{Index: i, Count: want}
		from = fmt.Sprintf("JOB_COMPLETION_INDEX=%d, %s", i, wantFrom)
		want = 0 // the count came from there; nothing to cross-check
	case has(lookup, "RANK") || has(lookup, "WORLD_SIZE"):
		var i, n int
		if i, err = intVar(lookup, "RANK"); err != nil {
			break
		}
		if n, err = intVar(lookup, "WORLD_SIZE"); err != nil {
			break
		}
		sp = Spec{Index: i, Count: n}
		from = fmt.Sprintf("RANK=%d, WORLD_SIZE=%d", i, n)
	default:
		return Spec{}, "", fmt.Errorf("--shard auto: no launcher variables: expected SLURM_ARRAY_TASK_ID (sbatch --array), " +
			"JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or RANK and WORLD_SIZE; or pass --shard I/N")
	}
	if err != nil {
		return Spec{}, "", fmt.Errorf("--shard auto: %w", err)
	}
	if err := sp.Validate(); err != nil {
		return Spec{}, "", fmt.Errorf("--shard auto (%s): %w", from, err)
	}
	if want != 0 && want != sp.Count {
		return Spec{}, "", fmt.Errorf("--shard auto: %s says %d shards but %s", from, sp.Count, wantFrom)
	}
	return sp, from, nil
}

// expectedCount is the shard count given by the flag and/or RELLA_SHARDS (0
// when neither), and a phrase naming its source.
func expectedCount(lookup Lookup, flag int) (int, string, error) {
	if flag < 0 {
		return 0, "", fmt.Errorf("--shards %d: must be positive", flag)
	}
	env := 0
	if has(lookup, CountEnv) {
		var err error
		if env, err = intVar(lookup, CountEnv); err != nil {
			return 0, "", err
		}
		if env < 1 {
			return 0, "", fmt.Errorf("%s=%d: must be at least 1", CountEnv, env)
		}
	}
	switch {
	case flag > 0 && env > 0 && flag != env:
		return 0, "", fmt.Errorf("--shards %d disagrees with %s=%d", flag, CountEnv, env)
	case flag > 0:
		return flag, fmt.Sprintf("--shards %d", flag), nil
	case env > 0:
		return env, fmt.Sprintf("%s=%d", CountEnv, env), nil
	}
	return 0, "", nil
}

func slurmArray(lookup Lookup) (Spec, string, error) {
	id, err := intVar(lookup, "SLURM_ARRAY_TASK_ID")
	if err != nil {
		return Spec{}, "", err
	}
	if step, ok := lookup("SLURM_ARRAY_TASK_STEP"); ok && strings.TrimSpace(step) != "1" {
		return Spec{}, "", fmt.Errorf("SLURM_ARRAY_TASK_STEP=%s: the task IDs of an array with a step are not shard indices; use --array=0-<N-1>", step)
	}
	hasMin, hasMax, hasCount := has(lookup, "SLURM_ARRAY_TASK_MIN"), has(lookup, "SLURM_ARRAY_TASK_MAX"), has(lookup, "SLURM_ARRAY_TASK_COUNT")
	if hasMin != hasMax {
		return Spec{}, "", fmt.Errorf("SLURM_ARRAY_TASK_ID=%d with only one of SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_MAX set", id)
	}
	if !hasMin && !hasCount {
		return Spec{}, "", fmt.Errorf("SLURM_ARRAY_TASK_ID=%d is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/MAX", id)
	}
	var count int
	if hasCount {
		if count, err = intVar(lookup, "SLURM_ARRAY_TASK_COUNT"); err != nil {
			return Spec{}, "", err
		}
	}
	if !hasMin {
		sp := Spec{Index: id, Count: count}
		from := fmt.Sprintf("SLURM_ARRAY_TASK_ID=%d, SLURM_ARRAY_TASK_COUNT=%d", id, count)
		if id >= count {
			return Spec{}, "", fmt.Errorf("%s: the ID is not below the count (an array not starting at 0 needs SLURM_ARRAY_TASK_MIN)", from)
		}
		return sp, from, nil
	}
	lo, err := intVar(lookup, "SLURM_ARRAY_TASK_MIN")
	if err != nil {
		return Spec{}, "", err
	}
	hi, err := intVar(lookup, "SLURM_ARRAY_TASK_MAX")
	if err != nil {
		return Spec{}, "", err
	}
	from := fmt.Sprintf("SLURM_ARRAY_TASK_ID=%d, SLURM_ARRAY_TASK_MIN=%d, SLURM_ARRAY_TASK_MAX=%d", id, lo, hi)
	if hi < lo || id < lo || id > hi {
		return Spec{}, "", fmt.Errorf("%s: the ID must lie in MIN..MAX", from)
	}
	n := hi - lo + 1
	if hasCount && count != n {
		return Spec{}, "", fmt.Errorf("%s, SLURM_ARRAY_TASK_COUNT=%d: the array has gaps (e.g. --array=1,4); its task IDs are not shard indices, use --array=0-N", from, count)
	}
	return Spec{Index: id - lo, Count: n}, from, nil
}

func has(lookup Lookup, key string) bool {
	v, ok := lookup(key)
	return ok && strings.TrimSpace(v) != ""
}

// intVar reads a non-negative integer variable; a missing or malformed one
// is an error naming it.
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
