// Package shard splits a run's items (prompts to score, items to embed) into
// N contiguous slices so that N jobs can each handle one, and puts the
// results back together.
//
//   - Spec is one slice, "I/N" with 0 <= I < N (0-based, like Slurm's
//     --array=0-7, Kubernetes' JOB_COMPLETION_INDEX and torchrun's RANK);
//     Parse reads the explicit form, Auto takes it from a launcher's
//     variables (Slurm arrays, Kubernetes Indexed Jobs, RANK/WORLD_SIZE).
//   - Spec.Range gives the slice [lo, hi) of n items: contiguous, in order,
//     cut at multiples of Spec.Unit (the caller's unit of work), unit
//     counts differing by at most one (the first ones hold one more).
//   - Commit records a finished shard's files (JSON Lines or any files that
//     concatenate) in a manifest, shard.json, under Dir(root, spec); Done
//     tells a rerun that the shard is finished; Merge checks that every shard
//     of one run is present, made with the same fingerprint and covers the
//     items contiguously, then concatenates each file in shard order, so a
//     merged predictions.jsonl is byte for byte the unsharded one.
//
// Nothing here reads the process environment itself: callers pass a lookup
// function (os.LookupEnv in the command, a map in tests).
package shard

import (
	"fmt"
	"strconv"
	"strings"
)

// Spec is the Index-th of Count contiguous slices (0 <= Index < Count).
//
// Unit, when above 1, makes every slice boundary but the last item a
// multiple of Unit: the caller's unit of work (a window of score batches, a
// chunk of items to embed), so that a shard runs exactly the batches an
// unsharded run runs and its results are the same bits whatever the
// engine's arithmetic does with the shape of a batch. Parse and Auto leave
// it 0 (the same as 1); the caller sets it.
type Spec struct {
	Index int `json:"index"`
	Count int `json:"count"`
	Unit  int `json:"unit,omitempty"`
}

// Whole is the single shard that holds every item (an unsharded run).
var Whole = Spec{Index: 0, Count: 1}

// Parse reads an explicit shard "I/N" (0-based I, 0 <= I < N).
func Parse(s string) (Spec, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Spec{}, fmt.Errorf("shard %q: want I/N, e.g. 0/8 for the first of 8 shards (or auto)", s)
	}
	i, err1 := strconv.Atoi(strings.TrimSpace(a))
	n, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return Spec{}, fmt.Errorf("shard %q: I and N must be integers, e.g. 0/8", s)
	}
	sp := Spec{Index: i, Count: n}
	if err := sp.Validate(); err != nil {
		return Spec{}, fmt.Errorf("shard %q: %w", s, err)
	}
	return sp, nil
}

// Validate checks 0 <= Index < Count.
func (s Spec) Validate() error {
	if s.Count < 1 {
		return fmt.Errorf("shard count %d: must be at least 1", s.Count)
	}
	if s.Unit < 0 {
		return fmt.Errorf("shard unit %d: must not be negative", s.Unit)
	}
	if s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("shard index %d out of range for %d shards (0-based: 0..%d)", s.Index, s.Count, s.Count-1)
	}
	return nil
}

// String is the explicit form Parse reads.
func (s Spec) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Range is the slice [lo, hi) of n items that shard s handles. The Count
// slices are contiguous and in index order and cover 0..n exactly once.
// The n items form ceil(n/Unit) units of Unit items (the last one shorter);
// the slices take whole units, and their unit counts differ by at most one:
// the first units%Count slices hold one unit more (so a slice is empty when
// there are fewer units than shards). With Unit 0 or 1 the sizes in items
// differ by at most one.
func (s Spec) Range(n int) (lo, hi int) {
	u := s.unit()
	units := (n + u - 1) / u
	q, r := units/s.Count, units%s.Count
	lo = s.Index*q + min(s.Index, r)
	hi = lo + q
	if s.Index < r {
		hi++
	}
	return min(lo*u, n), min(hi*u, n)
}

// unit is Unit, at least 1.
func (s Spec) unit() int { return max(s.Unit, 1) }
