package distributed

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// rankData is rank r's input: values of very different magnitudes, so that
// the order of the additions shows in the rounding.
func rankData32(r, n int) []float32 {
	g := rand.New(rand.NewPCG(uint64(r), 77))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32((g.Float64() - 0.5) * math.Pow(10, float64(g.IntN(9)-4)))
	}
	return x
}

func rankData64(r, n int) []float64 {
	g := rand.New(rand.NewPCG(uint64(r), 78))
	x := make([]float64, n)
	for i := range x {
		x[i] = (g.Float64() - 0.5) * math.Pow(10, float64(g.IntN(17)-8))
	}
	return x
}

// inOrder32 is the sum the Communicator promises: rank 0 + rank 1 + ...
// left to right in float32 (written out here, not through sumRanks).
func inOrder32(size, n int) []float32 {
	want := rankData32(0, n)
	for r := 1; r < size; r++ {
		x := rankData32(r, n)
		for i := range want {
			want[i] = want[i] + x[i]
		}
	}
	return want
}

func inOrder64(size, n int) []float64 {
	want := rankData64(0, n)
	for r := 1; r < size; r++ {
		x := rankData64(r, n)
		for i := range want {
			want[i] = want[i] + x[i]
		}
	}
	return want
}

// rankResult is what one rank saw in runCollectives.
type rankResult struct {
	Sum32  []float32
	Sum64  []float64
	Bcast  [][]byte // from every root
	Rank   int
	Size   int
	Errors []string
}

const vecLen = 1000

// runCollectives is what each rank does: the same sequence of calls on
// every rank, recording the results.
func runCollectives(ctx context.Context, c Communicator) rankResult {
	res := rankResult{Rank: c.Rank(), Size: c.Size()}
	note := func(err error) {
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
	}
	res.Sum32 = rankData32(c.Rank(), vecLen)
	note(c.AllReduceSumFloat32(ctx, res.Sum32))
	res.Sum64 = rankData64(c.Rank(), vecLen)
	note(c.AllReduceSumFloat64(ctx, res.Sum64))
	note(c.Barrier(ctx))
	for root := 0; root < c.Size(); root++ {
		var mine []byte
		if c.Rank() == root {
			mine = bytes.Repeat([]byte{byte(root + 1)}, 128+root)
		}
		got, err := c.Broadcast(ctx, root, mine)
		note(err)
		res.Bcast = append(res.Bcast, got)
	}
	// An empty all-reduce is legal.
	note(c.AllReduceSumFloat32(ctx, nil))
	note(c.Barrier(ctx))
	return res
}

// checkResults compares every rank's results with the rank-order sums and
// requires the same bits on every rank.
func checkResults(t *testing.T, size int, results []rankResult) {
	t.Helper()
	want32, want64 := inOrder32(size, vecLen), inOrder64(size, vecLen)
	for r, res := range results {
		if len(res.Errors) > 0 {
			t.Fatalf("rank %d: %s", r, strings.Join(res.Errors, "; "))
		}
		if res.Rank != r || res.Size != size {
			t.Fatalf("rank %d reports rank %d of %d", r, res.Rank, res.Size)
		}
		for i := range want32 {
			if math.Float32bits(res.Sum32[i]) != math.Float32bits(want32[i]) {
				t.Fatalf("rank %d: float32 sum[%d] = %g, want %g (rank order)", r, i, res.Sum32[i], want32[i])
			}
			if math.Float64bits(res.Sum64[i]) != math.Float64bits(want64[i]) {
				t.Fatalf("rank %d: float64 sum[%d] = %g, want %g (rank order)", r, i, res.Sum64[i], want64[i])
			}
		}
		for root, got := range res.Bcast {
			if want := bytes.Repeat([]byte{byte(root + 1)}, 128+root); !bytes.Equal(got, want) {
				t.Fatalf("rank %d: broadcast from %d = %d bytes %x..., want %d bytes of %d", r, root, len(got), got[:min(4, len(got))], len(want), root+1)
			}
		}
	}
}

// TestOrderMatters makes sure the inputs tell the rank order apart: summed
// from the last rank to the first, some float32 element rounds differently.
func TestOrderMatters(t *testing.T) {
	fwd := inOrder32(4, vecLen)
	rev := rankData32(3, vecLen)
	for r := 2; r >= 0; r-- {
		x := rankData32(r, vecLen)
		for i := range rev {
			rev[i] += x[i]
		}
	}
	differ := 0
	for i := range fwd {
		if fwd[i] != rev[i] {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("the test data sums to the same values in any order: it cannot check the rank order")
	}
	t.Logf("%d of %d float32 sums depend on the order", differ, vecLen)
}

func runAll(t *testing.T, comms []Communicator) []rankResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := make([]rankResult, len(comms))
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() { results[r] = runCollectives(ctx, c) })
	}
	wg.Wait()
	return results
}

func TestSingle(t *testing.T) {
	checkResults(t, 1, runAll(t, []Communicator{Single{}}))
}

func TestLocal(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			local, err := NewLocal(n)
			if err != nil {
				t.Fatal(err)
			}
			comms := make([]Communicator, n)
			for r := range comms {
				comms[r] = local[r]
			}
			checkResults(t, n, runAll(t, comms))
			// Many rounds in a row, with ranks racing ahead of each other.
			var wg sync.WaitGroup
			for _, c := range local {
				wg.Go(func() {
					for i := 0; i < 200; i++ {
						x := []float64{float64(c.Rank() + i)}
						if err := c.AllReduceSumFloat64(context.Background(), x); err != nil || x[0] != float64(n*(n-1)/2+n*i) {
							t.Errorf("round %d rank %d: %v %v", i, c.Rank(), x, err)
							return
						}
					}
				})
			}
			wg.Wait()
			if len(local[0].g.rounds) != 0 {
				t.Errorf("%d rounds left behind", len(local[0].g.rounds))
			}
		})
	}
}

func TestLocalOutOfStep(t *testing.T) {
	local, _ := NewLocal(2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = local[0].AllReduceSumFloat32(context.Background(), make([]float32, 3)) })
	wg.Go(func() { errs[1] = local[1].AllReduceSumFloat32(context.Background(), make([]float32, 4)) })
	wg.Wait()
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "out of step") || !strings.Contains(err.Error(), "4 values") {
			t.Errorf("rank %d: %v, want an out-of-step error", r, err)
		}
	}
	wg.Go(func() { errs[0] = local[0].Barrier(context.Background()) })
	wg.Go(func() { _, errs[1] = local[1].Broadcast(context.Background(), 1, []byte("x")) })
	wg.Wait()
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "rank 0 called Barrier, rank 1 Broadcast from rank 1") {
			t.Errorf("rank %d: %v", r, err)
		}
	}
}

// TestLocalGiveUp: a rank that stops waiting (its context ends) or closes
// makes the others fail instead of hang.
func TestLocalGiveUp(t *testing.T) {
	local, _ := NewLocal(3)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = local[0].Barrier(ctx) })
	wg.Go(func() { errs[1] = local[1].Barrier(context.Background()) }) // rank 2 never comes
	wg.Wait()
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "rank 0 gave up") {
		t.Errorf("rank 0: %v", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "rank 0 gave up") {
		t.Errorf("rank 1: %v", errs[1])
	}
	if err := local[2].Barrier(context.Background()); err == nil {
		t.Error("a call after the group broke succeeded")
	}

	local, _ = NewLocal(2)
	done := make(chan error)
	go func() { done <- local[0].AllReduceSumFloat32(context.Background(), []float32{1}) }()
	time.Sleep(20 * time.Millisecond)
	local[1].Close()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "rank 1 closed") {
		t.Errorf("after rank 1 closed: %v", err)
	}
}
