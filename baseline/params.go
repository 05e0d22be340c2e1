package baseline

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gorgonia.org/tensor"
)

// Param is one trained tensor. Its value is shared by the training and the
// evaluation graphs (both bind the same *tensor.Dense) and updated in place
// by Adam.
type Param struct {
	Name  string
	Value *tensor.Dense
	Decay bool // weight decay applies (MLP and cross weights; not embeddings, biases)
	m, v  []float64
}

// Params holds a model's parameters in creation order.
type Params struct {
	list  []*Param
	index map[string]*Param
	dt    tensor.Dtype
	rng   *rand.Rand
}

func newParams(dt tensor.Dtype, seed int64) *Params {
	return &Params{index: map[string]*Param{}, dt: dt, rng: rand.New(rand.NewPCG(uint64(seed), 0x5eed))}
}

// List returns the parameters in creation order.
func (p *Params) List() []*Param { return p.list }

// Count is the number of trained values.
func (p *Params) Count() int {
	n := 0
	for _, q := range p.list {
		n += q.Value.Shape().TotalSize()
	}
	return n
}

// initKind names how a parameter starts.
type initKind int

const (
	initZero   initKind = iota
	initNormal          // N(0, 0.05²): embeddings
	initGlorot          // uniform ±sqrt(6/(fan_in+fan_out)): weight matrices
)

// get returns the parameter called name, creating it with shape and initKind
// the first time (the second graph of a model finds the first's).
func (p *Params) get(name string, shape tensor.Shape, how initKind, decay bool) (*Param, error) {
	if q, ok := p.index[name]; ok {
		if !q.Value.Shape().Eq(shape) {
			return nil, fmt.Errorf("baseline: parameter %s has shape %v, requested %v", name, q.Value.Shape(), shape)
		}
		return q, nil
	}
	n := shape.TotalSize()
	vals := make([]float64, n)
	switch how {
	case initNormal:
		for i := range vals {
			vals[i] = 0.05 * p.rng.NormFloat64()
		}
	case initGlorot:
		lim := math.Sqrt(6 / float64(shape[0]+shape[len(shape)-1]))
		for i := range vals {
			vals[i] = lim * (2*p.rng.Float64() - 1)
		}
	}
	var v *tensor.Dense
	if p.dt == tensor.Float32 {
		f := make([]float32, n)
		for i, x := range vals {
			f[i] = float32(x)
		}
		v = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	} else {
		v = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(vals))
	}
	q := &Param{Name: name, Value: v, Decay: decay}
	p.list = append(p.list, q)
	p.index[name] = q
	return q, nil
}

// snapshot copies every value (to keep the best epoch's parameters).
func (p *Params) snapshot() [][]float32 {
	out := make([][]float32, len(p.list))
	for i, q := range p.list {
		out[i] = q.float32s()
	}
	return out
}

// restore writes values taken by snapshot back.
func (p *Params) restore(s [][]float32) {
	for i, q := range p.list {
		switch d := q.Value.Data().(type) {
		case []float32:
			copy(d, s[i])
		case []float64:
			for j, x := range s[i] {
				d[j] = float64(x)
			}
		}
	}
}

// float32sView returns the value as float32: the backing data itself for a
// float32 parameter, a copy otherwise.
func (q *Param) float32sView() []float32 {
	if d, ok := q.Value.Data().([]float32); ok {
		return d
	}
	return q.float32s()
}

// float32s returns a copy of the value as float32.
func (q *Param) float32s() []float32 {
	switch d := q.Value.Data().(type) {
	case []float32:
		return append([]float32(nil), d...)
	case []float64:
		out := make([]float32, len(d))
		for i, x := range d {
			out[i] = float32(x)
		}
		return out
	}
	return nil
}

// Adam is the Adam optimiser (Kingma & Ba) with bias correction, as
// torch.optim.Adam: m = β1 m + (1−β1) g, v = β2 v + (1−β2) g²,
// w −= lr · m̂ / (√v̂ + ε); weight decay (L2) adds wd·w to the gradient of
// the parameters marked Decay.
type Adam struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	t                                  int
}

// NewAdam returns Adam with the usual β1 0.9, β2 0.999, ε 1e-8.
func NewAdam(lr, weightDecay float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay}
}

// Step updates every parameter with its gradient grads[i] (same length as
// its value).
func (a *Adam) Step(params []*Param, grads [][]float64) {
	a.t++
	c1 := 1 - math.Pow(a.Beta1, float64(a.t))
	c2 := 1 - math.Pow(a.Beta2, float64(a.t))
	for i, q := range params {
		g := grads[i]
		if q.m == nil {
			q.m = make([]float64, len(g))
			q.v = make([]float64, len(g))
		}
		update := func(j int, w float64) float64 {
			gj := g[j]
			if q.Decay && a.WeightDecay > 0 {
				gj += a.WeightDecay * w
			}
			q.m[j] = a.Beta1*q.m[j] + (1-a.Beta1)*gj
			q.v[j] = a.Beta2*q.v[j] + (1-a.Beta2)*gj*gj
			return w - a.LR*(q.m[j]/c1)/(math.Sqrt(q.v[j]/c2)+a.Eps)
		}
		switch w := q.Value.Data().(type) {
		case []float32:
			for j := range w {
				w[j] = float32(update(j, float64(w[j])))
			}
		case []float64:
			for j := range w {
				w[j] = update(j, w[j])
			}
		}
	}
}
