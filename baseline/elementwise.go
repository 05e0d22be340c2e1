package baseline

// Element-wise operations written here rather than taken from Gorgonia:
// Gorgonia's own element-wise ops may write their result into an input's
// memory when its compiler thinks the input is no longer needed, and with
// custom ops in the graph that gave wrong gradients (a bias gradient read
// a buffer after it had been overwritten). These ops never write to their
// inputs.

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/rella-project/rella/internal/gorgop"
)

func sameShapes(in []tensor.Shape) (tensor.Shape, error) {
	for i, s := range in {
		if !s.Eq(in[0]) {
			return nil, fmt.Errorf("input %d has shape %v, input 0 %v", i, s, in[0])
		}
	}
	return in[0].Clone(), nil
}

// add is a + b (same shapes).
func add(a, b *G.Node) (*G.Node, error) {
	o := &op{Name: "add", Inputs: 2, WRT: []bool{true, true}, OutShape: sameShapes,
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			return run(in[0].Shape().Clone(), in, addKernel[float32], addKernel[float64])
		}),
		Diff: func(_ G.Nodes, _, g *G.Node) (G.Nodes, error) { return G.Nodes{g, g}, nil },
	}
	return apply(o, a, b)
}

func addKernel[T gorgop.Float](o []T, x [][]T) {
	chunks(len(o), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o[i] = x[0][i] + x[1][i]
		}
	})
}

// chunks runs f over [0,n) on all cores when n is large enough to pay for
// the goroutines (element-wise kernels: each index written by one).
func chunks(n int, f func(lo, hi int)) { gorgop.Parallel(n, 1<<15, f) }

// mul is the element-wise product a ∘ b (same shapes).
func mul(a, b *G.Node) (*G.Node, error) {
	o := &op{Name: "mul", Inputs: 2, WRT: []bool{true, true}, OutShape: sameShapes,
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			return run(in[0].Shape().Clone(), in, mulKernel[float32], mulKernel[float64])
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			da, err := mul(g, in[1])
			if err != nil {
				return nil, err
			}
			db, err := mul(g, in[0])
			return G.Nodes{da, db}, err
		},
	}
	return apply(o, a, b)
}

func mulKernel[T gorgop.Float](o []T, x [][]T) {
	chunks(len(o), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o[i] = x[0][i] * x[1][i]
		}
	})
}

// relu is max(x, 0); its derivative is taken as 0 at 0.
func relu(x *G.Node) (*G.Node, error) {
	o := &op{Name: "relu", Inputs: 1, WRT: []bool{true}, OutShape: sameShapes,
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			return run(in[0].Shape().Clone(), in, reluKernel[float32], reluKernel[float64])
		}),
		Diff: func(_ G.Nodes, out, g *G.Node) (G.Nodes, error) {
			grad := &op{Name: "reluGrad", Inputs: 2, OutShape: sameShapes, // (y, g) -> g where y > 0
				Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
					return run(in[0].Shape().Clone(), in, reluGradKernel[float32], reluGradKernel[float64])
				})}
			d, err := apply(grad, out, g)
			return G.Nodes{d}, err
		},
	}
	return apply(o, x)
}

func reluKernel[T gorgop.Float](o []T, x [][]T) {
	chunks(len(o), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o[i] = max(x[0][i], 0)
		}
	})
}

func reluGradKernel[T gorgop.Float](o []T, x [][]T) {
	chunks(len(o), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if x[0][i] > 0 {
				o[i] = x[1][i]
			}
		}
	})
}

// rowDot is the dot product of matching rows: a, b [n, d] -> [n, 1].
func rowDot(a, b *G.Node) (*G.Node, error) {
	o := &op{Name: "rowDot", Inputs: 2, WRT: []bool{true, true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			if _, err := sameShapes(in); err != nil {
				return nil, err
			}
			return tensor.Shape{in[0][0], 1}, want2D(in[0], "input")
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			n, d := in[0].Shape()[0], in[0].Shape()[1]
			return run(tensor.Shape{n, 1}, in, rowDotKernel[float32](d), rowDotKernel[float64](d))
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			s := in[0].Shape().Clone()
			scale := func(x *G.Node) (*G.Node, error) { // (x, g) -> x[r]·g[r]
				o := &op{Name: "rowScale", Inputs: 2,
					OutShape: func([]tensor.Shape) (tensor.Shape, error) { return s, nil },
					Forward: forwardDense(func(v []*tensor.Dense) (*tensor.Dense, error) {
						return run(s, v, rowScaleKernel[float32](s[1]), rowScaleKernel[float64](s[1]))
					})}
				return apply(o, x, g)
			}
			da, err := scale(in[1])
			if err != nil {
				return nil, err
			}
			db, err := scale(in[0])
			return G.Nodes{da, db}, err
		},
	}
	return apply(o, a, b)
}

func rowDotKernel[T gorgop.Float](d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for r := range o {
			var s T
			for c := r * d; c < (r+1)*d; c++ {
				s += x[0][c] * x[1][c]
			}
			o[r] = s
		}
	}
}

func rowScaleKernel[T gorgop.Float](d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for i, v := range x[0] {
			o[i] = v * x[1][i/d]
		}
	}
}
