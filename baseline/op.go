package baseline

// The Gorgonia Op plumbing of the baselines' custom operations: an op is a
// name, a shape rule, a forward kernel and a symbolic derivative built from
// further ops, so Gorgonia's autodiff composes them (as package cpu does
// for the LLaMA graph). Kernels are generic over float32 (training) and
// float64 (the finite-difference tests).

import (
	"fmt"
	"hash"
	"hash/fnv"
	"runtime"
	"sync"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// op is a Gorgonia Op defined by closures.
type op struct {
	name  string
	arity int
	shape func(in []tensor.Shape) (tensor.Shape, error)
	do    func(in []*tensor.Dense) (*tensor.Dense, error)
	diff  func(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) // nil: not differentiable
	wrt   []bool                                                      // inputs with a derivative
	typ   hm.Type                                                     // set by apply from the inputs and the output shape
}

func (o *op) Arity() int            { return o.arity }
func (o *op) Type() hm.Type         { return o.typ }
func (o *op) ReturnsPtr() bool      { return false }
func (o *op) CallsExtern() bool     { return false }
func (o *op) OverwritesInput() int  { return -1 }
func (o *op) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s-%p", o.name, o) }
func (o *op) Hashcode() uint32      { h := fnv.New32a(); o.WriteHash(h); return h.Sum32() }
func (o *op) String() string        { return o.name }
func (o *op) Do(in ...G.Value) (G.Value, error) {
	if len(in) != o.arity {
		return nil, fmt.Errorf("%s: %d inputs, want %d", o.name, len(in), o.arity)
	}
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
			return nil, fmt.Errorf("%s: input %d is %T, not a dense tensor", o.name, i, v)
		}
		if d.IsView() {
			d = d.Materialize().(*tensor.Dense)
		}
		if i > 0 && d.Dtype() != ds[0].Dtype() {
			return nil, fmt.Errorf("%s: input %d is %v, input 0 %v", o.name, i, d.Dtype(), ds[0].Dtype())
		}
		ds[i] = d
	}
	out, err := o.do(ds)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return out, nil
}
func (o *op) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	shapes := make([]tensor.Shape, len(in))
	for i, d := range in {
		s, ok := d.(tensor.Shape)
		if !ok {
			return nil, fmt.Errorf("%s: input %d has no shape", o.name, i)
		}
		shapes[i] = s
	}
	s, err := o.shape(shapes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return s, nil
}
func (o *op) DiffWRT(n int) []bool {
	if o.wrt != nil {
		return o.wrt
	}
	return make([]bool, n)
}
func (o *op) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if o.diff == nil {
		return nil, fmt.Errorf("%s is not differentiable", o.name)
	}
	return o.diff(inputs, output, grad)
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
	s, err := o.shape(shapes)
	if err != nil {
		return nil, fmt.Errorf("baseline: graph: %s: %w", o.name, err)
	}
	var out hm.Type = in[0].Dtype()
	if !s.IsScalar() {
		out = G.TensorType{Dims: s.Dims(), Of: in[0].Dtype()}
	}
	o.typ = hm.NewFnType(append(ts, out)...)
	n, err := G.ApplyOp(o, in...)
	if err != nil {
		return nil, fmt.Errorf("baseline: graph: %s: %w", o.name, err)
	}
	return n, nil
}

type float interface{ ~float32 | ~float64 }

// kernel is a forward or backward computation over one dtype's data.
type kernel[T float] func(out []T, in [][]T)

// run allocates the output of shape and runs f32 or f64 on the inputs' data.
func run(shape tensor.Shape, in []*tensor.Dense, f32 kernel[float32], f64 kernel[float64]) (*tensor.Dense, error) {
	dt := in[0].Dtype()
	out := tensor.New(tensor.Of(dt), tensor.WithShape(shape...))
	switch dt {
	case tensor.Float32:
		xs := make([][]float32, len(in))
		for i, d := range in {
			xs[i] = d.Float32s()
		}
		f32(out.Data().([]float32), xs)
	case tensor.Float64:
		xs := make([][]float64, len(in))
		for i, d := range in {
			xs[i] = d.Float64s()
		}
		f64(out.Data().([]float64), xs)
	default:
		return nil, fmt.Errorf("dtype %v is not supported", dt)
	}
	return out, nil
}

// parallel runs f over [0,n) in chunks on all cores; each index is handled
// by one goroutine, so results do not depend on the number of cores.
func parallel(n int, f func(lo, hi int)) {
	w := min(runtime.GOMAXPROCS(0), n)
	if w <= 1 || n < 64 {
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

func want2D(s tensor.Shape, what string) error {
	if s.Dims() != 2 {
		return fmt.Errorf("%s: want a matrix, got shape %v", what, s)
	}
	return nil
}
