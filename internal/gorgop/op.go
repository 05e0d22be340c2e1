// Package gorgop holds the plumbing shared by rella's custom Gorgonia
// operations (package cpu's LLaMA graph and package baseline's models): an
// Op type defined by closures (a name, a shape rule, a forward kernel and a
// symbolic derivative built from further ops, so Gorgonia's autodiff
// composes them), the dtype dispatch that hands a kernel its inputs' data
// as []float32 or []float64, and the chunked loop the kernels parallelise
// with.
//
// What differs between the two users stays with them: cpu keeps each op's
// output tensor across runs of its graph (the State of its ops) and gives
// every op the type a -> ... -> a; baseline converts its inputs to dense
// tensors (scalar gradient seeds included), allocates each output, and
// sets an op's type from its inputs and output shape when it applies it.
package gorgop

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Op is a Gorgonia Op (and SDOp) defined by closures. S is per-op state
// that the package's forward closures use through the op they receive
// (struct{} where they need none). An Op is used through its pointer: its
// hash is its name and address, so each Op value is one node kind.
type Op[S any] struct {
	Name   string
	Inputs int     // the op's arity
	Sig    hm.Type // the op's type, returned by Type; set before G.ApplyOp
	// OutShape gives the output's shape from the inputs' shapes.
	OutShape func(in []tensor.Shape) (tensor.Shape, error)
	// Forward computes the output from exactly Inputs values.
	Forward func(o *Op[S], in []G.Value) (G.Value, error)
	// Diff builds the gradients of the inputs flagged in WRT from the
	// output's gradient grad; nil: not differentiable.
	Diff  func(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error)
	WRT   []bool // inputs with a derivative; nil: none
	State S
}

// Arity is the number of inputs.
func (o *Op[S]) Arity() int { return o.Inputs }

// Type is the op's type, Sig.
func (o *Op[S]) Type() hm.Type { return o.Sig }

// ReturnsPtr is false: the op returns a value.
func (o *Op[S]) ReturnsPtr() bool { return false }

// CallsExtern is false: the op runs on the CPU in Go.
func (o *Op[S]) CallsExtern() bool { return false }

// OverwritesInput is -1: the op never writes to its inputs.
func (o *Op[S]) OverwritesInput() int { return -1 }

// WriteHash writes the op's name and address, so two ops are never merged.
func (o *Op[S]) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s-%p", o.Name, o) }

// Hashcode is the FNV-1a hash of WriteHash.
func (o *Op[S]) Hashcode() uint32 { h := fnv.New32a(); o.WriteHash(h); return h.Sum32() }

// String is the op's name.
func (o *Op[S]) String() string { return o.Name }

// Do checks the number of inputs and runs Forward; its errors name the op.
func (o *Op[S]) Do(in ...G.Value) (G.Value, error) {
	if len(in) != o.Inputs {
		return nil, fmt.Errorf("%s: %d inputs, want %d", o.Name, len(in), o.Inputs)
	}
	v, err := o.Forward(o, in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Name, err)
	}
	return v, nil
}

// InferShape runs OutShape on the inputs' shapes; its errors name the op.
func (o *Op[S]) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	shapes := make([]tensor.Shape, len(in))
	for i, d := range in {
		s, ok := d.(tensor.Shape)
		if !ok {
			return nil, fmt.Errorf("%s: input %d has no shape", o.Name, i)
		}
		shapes[i] = s
	}
	s, err := o.OutShape(shapes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Name, err)
	}
	return s, nil
}

// DiffWRT flags the inputs with a derivative (WRT; none when it is nil).
func (o *Op[S]) DiffWRT(n int) []bool {
	if o.WRT != nil {
		return o.WRT
	}
	return make([]bool, n)
}

// SymDiff builds the inputs' gradients with Diff.
func (o *Op[S]) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if o.Diff == nil {
		return nil, fmt.Errorf("%s is not differentiable", o.Name)
	}
	return o.Diff(inputs, output, grad)
}
