package distributed

import (
	"context"
	"fmt"
	"sync"
)

// Communicator is the collective operations data-parallel training needs.
// Every rank calls the same operations in the same order (with slices of
// the same length); a rank that calls something else, or leaves, makes the
// others' calls fail with an error that says so rather than hang.
type Communicator interface {
	Rank() int
	Size() int
	// AllReduceSumFloat32 replaces x on every rank by the sum over ranks,
	// added in rank order x0 + x1 + ... in float32; every rank gets the
	// same bits.
	AllReduceSumFloat32(ctx context.Context, x []float32) error
	// AllReduceSumFloat64 is AllReduceSumFloat32 for float64.
	AllReduceSumFloat64(ctx context.Context, x []float64) error
	// Barrier returns when every rank has called it.
	Barrier(ctx context.Context) error
	// Broadcast returns root's data on every rank (a copy; data is
	// ignored on the other ranks, which may pass nil).
	Broadcast(ctx context.Context, root int, data []byte) ([]byte, error)
	// Close leaves the group; the others' later calls fail.
	Close() error
}

// sumRanks is the reference reduction of every form: in[0] + in[1] + ...
// left to right, element by element, in T's precision.
func sumRanks[T float32 | float64](in [][]T) []T {
	out := append([]T(nil), in[0]...)
	for _, x := range in[1:] {
		for i, v := range x {
			out[i] += v
		}
	}
	return out
}

// Single is the communicator of a job with one process: every operation
// leaves its data as it is.
type Single struct{}

var _ Communicator = Single{}

func (Single) Rank() int                                                  { return 0 }
func (Single) Size() int                                                  { return 1 }
func (Single) AllReduceSumFloat32(ctx context.Context, x []float32) error { return ctx.Err() }
func (Single) AllReduceSumFloat64(ctx context.Context, x []float64) error { return ctx.Err() }
func (Single) Barrier(ctx context.Context) error                          { return ctx.Err() }
func (Single) Close() error                                               { return nil }
func (Single) Broadcast(ctx context.Context, root int, data []byte) ([]byte, error) {
	if root != 0 {
		return nil, fmt.Errorf("broadcast from rank %d in a group of 1", root)
	}
	return append([]byte(nil), data...), ctx.Err()
}

// Local is one rank of an in-process group made by NewLocal: the ranks are
// goroutines of one process (tests, and checks of data-parallel code without
// a cluster).
type Local struct {
	g    *localGroup
	rank int
	seq  uint64 // this rank's count of collective calls
}

var _ Communicator = (*Local)(nil)

type localGroup struct {
	n      int
	mu     sync.Mutex
	rounds map[uint64]*round
	broken error // set when a rank gave up or closed: every later call fails
}

// round is the seq-th collective call of every rank.
type round struct {
	op      []string // what each rank called
	in      []any
	arrived int
	left    int
	done    chan struct{}
	closed  bool
	out     []any // per rank
	err     error
}

// NewLocal makes an in-process group of n ranks; give comms[r] to the
// goroutine of rank r.
func NewLocal(n int) ([]*Local, error) {
	if n < 1 {
		return nil, fmt.Errorf("in-process group of %d ranks: need at least 1", n)
	}
	g := &localGroup{n: n, rounds: map[uint64]*round{}}
	comms := make([]*Local, n)
	for r := range comms {
		comms[r] = &Local{g: g, rank: r}
	}
	return comms, nil
}

func (c *Local) Rank() int { return c.rank }
func (c *Local) Size() int { return c.g.n }

func (c *Local) AllReduceSumFloat32(ctx context.Context, x []float32) error {
	out, err := c.collective(ctx, fmt.Sprintf("AllReduceSumFloat32 of %d values", len(x)), x, reduceSum[float32])
	if err == nil {
		copy(x, out.([]float32))
	}
	return err
}

func (c *Local) AllReduceSumFloat64(ctx context.Context, x []float64) error {
	out, err := c.collective(ctx, fmt.Sprintf("AllReduceSumFloat64 of %d values", len(x)), x, reduceSum[float64])
	if err == nil {
		copy(x, out.([]float64))
	}
	return err
}

func (c *Local) Barrier(ctx context.Context) error {
	_, err := c.collective(ctx, "Barrier", nil, func(in []any) ([]any, error) { return make([]any, len(in)), nil })
	return err
}

func (c *Local) Broadcast(ctx context.Context, root int, data []byte) ([]byte, error) {
	if root < 0 || root >= c.g.n {
		return nil, fmt.Errorf("broadcast from rank %d in a group of %d", root, c.g.n)
	}
	out, err := c.collective(ctx, fmt.Sprintf("Broadcast from rank %d", root), data, func(in []any) ([]any, error) {
		src := in[root].([]byte)
		out := make([]any, len(in))
		for r := range out {
			out[r] = append([]byte{}, src...)
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return out.([]byte), nil
}

// Close leaves the group: calls of the other ranks that are waiting, and
// every later call, fail.
func (c *Local) Close() error {
	c.g.fail(fmt.Errorf("rank %d closed its communicator", c.rank))
	return nil
}

func reduceSum[T float32 | float64](in []any) ([]any, error) {
	xs := make([][]T, len(in))
	for r, v := range in {
		xs[r] = v.([]T)
	}
	sum := sumRanks(xs)
	out := make([]any, len(in))
	for r := range out {
		out[r] = sum // read-only: each rank copies it into its own slice
	}
	return out, nil
}

// collective deposits this rank's input for its next call and waits until
// every rank has deposited its own; the last to arrive computes every rank's
// output.
func (c *Local) collective(ctx context.Context, op string, in any, reduce func([]any) ([]any, error)) (any, error) {
	g := c.g
	seq := c.seq
	c.seq++
	g.mu.Lock()
	if g.broken != nil {
		g.mu.Unlock()
		return nil, fmt.Errorf("rank %d: %s: %w", c.rank, op, g.broken)
	}
	r := g.rounds[seq]
	if r == nil {
		r = &round{op: make([]string, g.n), in: make([]any, g.n), done: make(chan struct{})}
		g.rounds[seq] = r
	}
	r.op[c.rank], r.in[c.rank] = op, in
	r.arrived++
	if r.arrived == g.n {
		for q := 1; q < g.n && r.err == nil; q++ {
			if r.op[q] != r.op[0] {
				r.err = fmt.Errorf("ranks out of step at collective call %d: rank 0 called %s, rank %d %s", seq, r.op[0], q, r.op[q])
			}
		}
		if r.err == nil {
			r.out, r.err = reduce(r.in)
		}
		r.closed = true
		close(r.done)
	}
	g.mu.Unlock()

	select {
	case <-r.done:
	case <-ctx.Done():
		err := fmt.Errorf("rank %d gave up waiting in %s: %w", c.rank, op, ctx.Err())
		g.fail(err)
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r.left++
	if r.left == g.n {
		delete(g.rounds, seq)
	}
	if r.err != nil {
		return nil, fmt.Errorf("rank %d: %s: %w", c.rank, op, r.err)
	}
	return r.out[c.rank], nil
}

// fail breaks the group: waiting calls return err, and so do later ones.
func (g *localGroup) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.broken == nil {
		g.broken = err
	}
	for _, r := range g.rounds {
		if !r.closed {
			r.err = g.broken
			r.closed = true
			close(r.done)
		}
	}
}
