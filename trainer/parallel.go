package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/rella-project/rella/distributed"
)

// Data-parallel training (Job.Comm with more than one rank).
//
// Every rank runs the same loop over the same data order. The micro-batches
// of each optimiser step are split into contiguous runs, one per rank (rank
// r takes micro-batches [r*A/W, (r+1)*A/W) of the A of a step, W ranks);
// each rank accumulates its LoRA gradients, loss sum and token counts from
// zero, and once per step Reduce sums them over the ranks (one all-reduce of
// every LoRA gradient packed together, one of float64 [loss sum, labelled
// tokens, input tokens]), added in rank order. Every rank then normalises by
// the global token count, clips and takes the same AdamW step, so the
// adapters stay identical and the token-normalised loss is that of the
// whole global batch. The dropout seed of a micro-batch depends on its
// (step, index) only, whichever rank runs it.
//
// Exactness: the sums are float32 sums of per-rank partial sums; Job.
// ReferenceRanks makes a single process accumulate the same partial sums in
// the same order, so W ranks end bit for bit equal to that reference (and
// world size 1 is the plain sequential path, unchanged).
//
// Rank 0 alone runs the hooks (log, progress, evaluation, best adapter,
// checkpoints, trainer_state.json) and writes the final adapter; the other
// ranks write nothing. At the start of every step one small all-reduce
// (AnyTrue for "stop requested": a cancelled context, i.e. SIGTERM, on any
// rank; and "rank 0 stopped early") decides for all ranks together, so a
// signal on any rank ends the run after the same step everywhere with one
// checkpoint written by rank 0. Checkpoints are therefore always at step
// boundaries, which hold nothing that depends on the world size: a run may
// resume with the same or a different world size (the output folder must
// be shared by the ranks). A mid-window checkpoint of a single-process run
// resumes with world size 1 only.

// dp reports whether this run takes the data-parallel path: any
// communicator but none and distributed.Single, even one of size 1 (so that
// a one-rank NCCL or in-process group exercises the collectives).
func (l *Loop) dp() bool {
	switch l.Job.Comm.(type) {
	case nil, distributed.Single, *distributed.Single:
		return false
	}
	return true
}

// lead reports whether this process writes files (rank 0, or a single process).
func (l *Loop) lead() bool { return !l.dp() || l.Job.Comm.Rank() == 0 }

// rankMicros is the range of micro-batches [lo, hi) of a step that rank r of
// w runs when a step has accum micro-batches.
func rankMicros(r, w, accum int) (lo, hi int) { return r * accum / w, (r + 1) * accum / w }

// microRange is the micro-batches of step this process runs, from k0 (the
// state's position in a resumed window) on.
func (l *Loop) microRange(k0 int) (lo, hi int) {
	if !l.dp() {
		return k0, l.Plan.Accum
	}
	return rankMicros(l.Job.Comm.Rank(), l.Job.Comm.Size(), l.Plan.Accum)
}

// refPartial holds, for Job.ReferenceRanks, the partial sums of the
// would-be ranks of the current window finished so far.
type refPartial struct {
	grads   [][]float32
	loss    float64
	started bool
}

// referenceBoundary is called before micro-batch k of step s: when k starts
// a new would-be rank's run, the previous run's gradient and loss sums are
// added (in rank order) to the partial sums and the accumulators restart
// from zero, as on a rank of its own.
func (l *Loop) referenceBoundary(s, k int) {
	if l.dp() || l.Job.ReferenceRanks == nil {
		return
	}
	w := l.Job.ReferenceRanks(s)
	if w <= 1 || k == 0 {
		return
	}
	starts := false
	for r := 1; r < w; r++ {
		if lo, _ := rankMicros(r, w, l.Plan.Accum); lo == k {
			starts = true
		}
	}
	if !starts {
		return
	}
	l.refAdd()
}

// refAdd moves the current accumulators into the partial sums.
func (l *Loop) refAdd() {
	st, ref := l.State, &l.ref
	if !ref.started {
		ref.grads = make([][]float32, len(l.params))
		for i, p := range l.params {
			ref.grads[i] = append([]float32(nil), p.Grad...)
		}
		ref.loss, ref.started = st.WindowLossSum, true
	} else {
		for i, p := range l.params {
			for j, v := range p.Grad {
				ref.grads[i][j] += v
			}
		}
		ref.loss += st.WindowLossSum
	}
	zeroGrads(l.params)
	st.WindowLossSum = 0
}

// Reduce is the hook called once per optimiser step, after this process's
// micro-batches and before the loss is normalised and the gradients clipped:
// it makes the window's gradient sums, loss sum and token counts those of
// the whole global batch. In a data-parallel run it all-reduces them over
// the ranks; with Job.ReferenceRanks it adds the would-be ranks' partial
// sums; otherwise it does nothing.
func (l *Loop) Reduce(ctx context.Context) error {
	st := l.State
	if !l.dp() {
		if l.ref.started {
			l.refAdd() // the last would-be rank
			for i, p := range l.params {
				copy(p.Grad, l.ref.grads[i])
			}
			st.WindowLossSum = l.ref.loss
			l.ref = refPartial{}
		}
		return nil
	}
	// every gradient packed into one buffer: one collective (as
	// distributed.AllReduceSlices, but also for a group of one)
	n := 0
	for _, p := range l.params {
		n += len(p.Grad)
	}
	if len(l.packed) != n {
		l.packed = make([]float32, n)
	}
	off := 0
	for _, p := range l.params {
		off += copy(l.packed[off:], p.Grad)
	}
	if err := l.Job.Comm.AllReduceSumFloat32(ctx, l.packed); err != nil {
		return fmt.Errorf("trainer: step %d: all-reduce of the LoRA gradients (%d values): %w", st.Step+1, n, err)
	}
	off = 0
	for _, p := range l.params {
		off += copy(p.Grad, l.packed[off:])
	}
	x := []float64{st.WindowLossSum, float64(st.WindowTokens), float64(st.WindowInputTokens)}
	if err := l.Job.Comm.AllReduceSumFloat64(ctx, x); err != nil {
		return fmt.Errorf("trainer: step %d: loss and token counts: %w", st.Step+1, err)
	}
	st.WindowLossSum, st.WindowTokens, st.WindowInputTokens = x[0], int(x[1]), int(x[2])
	return nil
}

// control is the collective at the start of every data-parallel step: it
// tells every rank whether any rank was asked to stop (its context was
// cancelled: SIGTERM) and whether rank 0 ended the run (early stopping).
func (l *Loop) control(ctx context.Context) (interrupt, stopped bool, err error) {
	x := []float64{0, 0}
	if ctx.Err() != nil {
		x[0] = 1
	}
	if l.State.Stopped != "" {
		x[1] = 1
	}
	if err := l.Job.Comm.AllReduceSumFloat64(context.WithoutCancel(ctx), x); err != nil {
		return false, false, fmt.Errorf("trainer: before step %d: %w", l.State.Step+1, err)
	}
	return x[0] > 0, x[1] > 0, nil
}

// checkRanks makes sure every rank starts from the same state: the same
// step and the same adapter, optimiser moments and gradients (a fresh run
// with another initialisation, or a rank that read another checkpoint, is
// an error naming the rank).
func (l *Loop) checkRanks(ctx context.Context) error {
	if !l.dp() {
		return nil
	}
	c := l.Job.Comm
	st := l.State
	if st.Micro != 0 {
		return fmt.Errorf("trainer: rank %d: the checkpoint is %d micro-batches into the window of step %d; a data-parallel run resumes only from a step boundary: finish that step with world size 1 first, or resume from an earlier checkpoint", c.Rank(), st.Micro, st.Step+1)
	}
	if l.Plan.Accum < c.Size() {
		l.Log.Warn("trainer: fewer micro-batches per step than ranks; some ranks idle each step", "micro_batches", l.Plan.Accum, "ranks", c.Size())
	}
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(st.Step))
	h.Write(b[:])
	binary.LittleEndian.PutUint64(b[:], uint64(l.adam.T))
	h.Write(b[:])
	for i, p := range l.params {
		for _, xs := range [][]float32{p.Value, p.Grad, l.adam.M[i], l.adam.V[i]} {
			for _, v := range xs {
				binary.LittleEndian.PutUint32(b[:4], math.Float32bits(v))
				h.Write(b[:4])
			}
		}
	}
	mine := h.Sum(nil)
	root, err := c.Broadcast(ctx, 0, mine)
	if err != nil {
		return fmt.Errorf("trainer: comparing the ranks' starting state: %w", err)
	}
	ok := []float64{0}
	if string(root) != string(mine) {
		ok[0] = 1
	}
	if err := c.AllReduceSumFloat64(ctx, ok); err != nil {
		return fmt.Errorf("trainer: comparing the ranks' starting state: %w", err)
	}
	if ok[0] > 0 {
		return fmt.Errorf("trainer: rank %d: %v of %d ranks start from another adapter, optimiser state or step than rank 0 (step %d here): every rank must load the same base model and adapter initialisation, and see the same output folder to resume from",
			c.Rank(), ok[0], c.Size(), st.Step)
	}
	return nil
}

// errStoppedElsewhere is the cause a rank reports when another rank asked
// for the stop.
var errStoppedElsewhere = errors.New("another rank was asked to stop")
