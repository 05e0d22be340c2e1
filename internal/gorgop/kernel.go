package gorgop

import (
	"fmt"
	"runtime"
	"sync"

	"gorgonia.org/tensor"
)

// Float is the element type of a kernel: float32 (training) or float64
// (the finite-difference tests).
type Float interface{ ~float32 | ~float64 }

// Kernel is a forward or backward computation over one dtype's data: it
// writes all of out from the inputs' data in.
type Kernel[T Float] func(out []T, in [][]T)

// Call runs f32 or f64, by out's dtype, on the data of out and of the
// inputs, which must all have out's dtype. It neither allocates nor
// clears out: the caller decides whether out is new or reused.
func Call(out *tensor.Dense, in []*tensor.Dense, f32 Kernel[float32], f64 Kernel[float64]) error {
	dt := out.Dtype()
	for i, d := range in {
		if d.Dtype() != dt {
			return fmt.Errorf("input %d is %v, want %v", i, d.Dtype(), dt)
		}
	}
	switch dt {
	case tensor.Float32:
		xs := make([][]float32, len(in))
		for i, d := range in {
			xs[i] = d.Float32s()
		}
		f32(out.Float32s(), xs)
	case tensor.Float64:
		xs := make([][]float64, len(in))
		for i, d := range in {
			xs[i] = d.Float64s()
		}
		f64(out.Float64s(), xs)
	default:
		return fmt.Errorf("dtype %v is not supported", dt)
	}
	return nil
}

// Parallel runs f over [0,n) split into at most GOMAXPROCS contiguous
// chunks, one goroutine each, and waits for them; n below serialBelow (or
// one core) runs f(0, n) on the calling goroutine. Each index is handled
// by exactly one call of f, so a kernel whose indices are independent
// gives the same result on any number of cores.
func Parallel(n, serialBelow int, f func(lo, hi int)) {
	w := min(runtime.GOMAXPROCS(0), n)
	if w <= 1 || n < serialBelow {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + w - 1) / w
	for lo := 0; lo < n; lo += step {
		hi := min(lo+step, n)
		wg.Add(1)
		go func() { defer wg.Done(); f(lo, hi) }()
	}
	wg.Wait()
}
