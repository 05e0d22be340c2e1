package distributed

import (
	"context"
	"fmt"
)

// AllReduceSlices sums several float32 slices over the ranks with a single
// collective (one per optimiser step: the LoRA gradients of every adapted
// matrix): they are packed into one buffer in order, reduced, and copied
// back. The result is bit for bit that of one AllReduceSumFloat32 per slice.
// Every rank must pass slices of the same lengths in the same order.
func AllReduceSlices(ctx context.Context, c Communicator, xs [][]float32) error {
	if c.Size() == 1 {
		return ctx.Err()
	}
	n := 0
	for _, x := range xs {
		n += len(x)
	}
	buf := make([]float32, 0, n)
	for _, x := range xs {
		buf = append(buf, x...)
	}
	if err := c.AllReduceSumFloat32(ctx, buf); err != nil {
		return fmt.Errorf("all-reduce of %d slices (%d values): %w", len(xs), n, err)
	}
	off := 0
	for _, x := range xs {
		off += copy(x, buf[off:])
	}
	return nil
}

// AnyTrue tells every rank whether any rank passed true: called once per
// optimiser step with "a stop was requested here" (SIGTERM on that rank),
// every rank stops after the same step and rank 0 writes one checkpoint.
func AnyTrue(ctx context.Context, c Communicator, v bool) (bool, error) {
	x := []float64{0}
	if v {
		x[0] = 1
	}
	if err := c.AllReduceSumFloat64(ctx, x); err != nil {
		return false, err
	}
	return x[0] > 0, nil
}
