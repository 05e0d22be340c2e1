package baseline

// The baselines' side of the Gorgonia Op plumbing. The op type, the
// float32/float64 kernel dispatch and the chunked loop are package
// gorgop's (shared with package cpu); what the baselines do their own way
// is here: dense inputs, a fresh output per run, and the type from the
// inputs and the output shape. Kernels are generic over float32
// (training) and float64 (the finite-difference tests).

import (
	"fmt"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/rella-project/rella/internal/gorgop"
)

// op is a Gorgonia Op defined by closures (see package gorgop). Its
// forward is forwardDense of a function of dense tensors, and apply sets
// its type from the inputs and the output shape.
type op = gorgop.Op[struct{}]

// forwardDense makes an op's forward from f: the inputs reach f as
// contiguous *tensor.Dense of one dtype (views materialised, a scalar
// gradient seed as a tensor of shape (1)).
func forwardDense(f func(in []*tensor.Dense) (*tensor.Dense, error)) func(*op, []G.Value) (G.Value, error) {
	return func(_ *op, in []G.Value) (G.Value, error) {
		ds := make([]*tensor.Dense, len(in))
		for i, v := range in {
			switch s := v.(type) { // a scalar gradient seed
			case *G.F32:
				v = tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{float32(*s)}))
			case *G.F64:
				v = tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{float64(*s)}))
			}
			d, ok := v.(*tensor.Dense)
			if !ok {
				return nil, fmt.Errorf("input %d is %T, not a dense tensor", i, v)
			}
			if d.IsView() {
				d = d.Materialize().(*tensor.Dense)
			}
			if i > 0 && d.Dtype() != ds[0].Dtype() {
				return nil, fmt.Errorf("input %d is %v, input 0 %v", i, d.Dtype(), ds[0].Dtype())
			}
			ds[i] = d
		}
		return f(ds)
	}
}

// apply builds a node for o on the inputs. The op's type is that of its
// inputs to a tensor of the output's rank and the inputs' dtype.
func apply(o *op, in ...*G.Node) (*G.Node, error) {
	ts := make([]hm.Type, 0, len(in)+1)
	shapes := make([]tensor.Shape, len(in))
	for i, n := range in {
		ts = append(ts, n.Type())
		shapes[i] = n.Shape()
	}
	s, err := o.OutShape(shapes)
	if err != nil {
		return nil, fmt.Errorf("baseline: graph: %s: %w", o.Name, err)
	}
	var out hm.Type = in[0].Dtype()
	if !s.IsScalar() {
		out = G.TensorType{Dims: s.Dims(), Of: in[0].Dtype()}
	}
	o.Sig = hm.NewFnType(append(ts, out)...)
	n, err := G.ApplyOp(o, in...)
	if err != nil {
		return nil, fmt.Errorf("baseline: graph: %s: %w", o.Name, err)
	}
	return n, nil
}

// run allocates the output of shape and runs f32 or f64 on the inputs' data.
func run(shape tensor.Shape, in []*tensor.Dense, f32 gorgop.Kernel[float32], f64 gorgop.Kernel[float64]) (*tensor.Dense, error) {
	out := tensor.New(tensor.Of(in[0].Dtype()), tensor.WithShape(shape...))
	if err := gorgop.Call(out, in, f32, f64); err != nil {
		return nil, err
	}
	return out, nil
}

// parallel runs f over [0,n) in chunks on all cores, serially below 64
// indices; each index is handled by one goroutine, so results do not
// depend on the number of cores.
func parallel(n int, f func(lo, hi int)) { gorgop.Parallel(n, 64, f) }

func want2D(s tensor.Shape, what string) error {
	if s.Dims() != 2 {
		return fmt.Errorf("%s: want a matrix, got shape %v", what, s)
	}
	return nil
}
