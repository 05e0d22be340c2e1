package gorgop

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Every index in [0,n) is visited exactly once, whatever n and threshold.
func TestParallelVisitsEachIndexOnce(t *testing.T) {
	for _, n := range []int{0, 1, 7, 63, 64, 1000} {
		for _, serialBelow := range []int{1, 64, 1 << 15} {
			var mu sync.Mutex
			seen := make([]int, n)
			Parallel(n, serialBelow, func(lo, hi int) {
				mu.Lock()
				defer mu.Unlock()
				for i := lo; i < hi; i++ {
					seen[i]++
				}
			})
			for i, c := range seen {
				if c != 1 {
					t.Fatalf("n=%d serialBelow=%d: index %d visited %d times", n, serialBelow, i, c)
				}
			}
		}
	}
}

func addKernel[T Float](o []T, x [][]T) {
	for i := range o {
		o[i] = x[0][i] + x[1][i]
	}
}

// Call hands each dtype's kernel the data of out and the inputs, and
// refuses inputs of another dtype.
func TestCall(t *testing.T) {
	a := tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{1, 2, 3}))
	b := tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{10, 20, 30}))
	out := tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(3))
	if err := Call(out, []*tensor.Dense{a, b}, addKernel[float32], addKernel[float64]); err != nil {
		t.Fatal(err)
	}
	for i, v := range out.Float64s() {
		if want := a.Float64s()[i] + b.Float64s()[i]; v != want {
			t.Fatalf("out[%d] = %v, want %v", i, v, want)
		}
	}
	c := tensor.New(tensor.WithShape(3), tensor.WithBacking([]float32{1, 2, 3}))
	if err := Call(out, []*tensor.Dense{a, c}, addKernel[float32], addKernel[float64]); err == nil || !strings.Contains(err.Error(), "input 1") {
		t.Fatalf("mixed dtypes: err = %v, want one naming input 1", err)
	}
	ints := tensor.New(tensor.WithShape(1), tensor.WithBacking([]int{1}))
	if err := Call(ints, []*tensor.Dense{ints}, addKernel[float32], addKernel[float64]); err == nil {
		t.Fatal("int tensors: no error")
	}
}

// Do checks the arity and names the op in the errors of Forward and
// OutShape; ops are never merged by hash; DiffWRT defaults to none.
func TestOp(t *testing.T) {
	boom := errors.New("boom")
	o := &Op[struct{}]{Name: "probe", Inputs: 1,
		OutShape: func([]tensor.Shape) (tensor.Shape, error) { return nil, boom },
		Forward:  func(*Op[struct{}], []G.Value) (G.Value, error) { return nil, boom },
	}
	if _, err := o.Do(); err == nil || !strings.Contains(err.Error(), "0 inputs, want 1") {
		t.Fatalf("arity: err = %v", err)
	}
	x := tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{1}))
	if _, err := o.Do(x); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "probe: ") {
		t.Fatalf("Do: err = %v, want boom named probe", err)
	}
	if _, err := o.InferShape(tensor.Shape{1}); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "probe: ") {
		t.Fatalf("InferShape: err = %v, want boom named probe", err)
	}
	if got := fmt.Sprint(o.DiffWRT(2)); got != "[false false]" {
		t.Fatalf("DiffWRT = %s", got)
	}
	if _, err := o.SymDiff(nil, nil, nil); err == nil {
		t.Fatal("SymDiff without Diff: no error")
	}
	twin := *o
	if o.Hashcode() == twin.Hashcode() {
		t.Fatal("two ops of one name share a hash")
	}
}
