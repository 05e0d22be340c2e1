package baseline

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// checkGradients builds out = f(inputs) in float64, takes the loss
// Σ out ∘ R for a fixed random R (out itself when it is a scalar), and
// compares Gorgonia's gradients of every input with central finite
// differences: |analytic − numeric| <= atol + rtol·|numeric|. h = 1e-6 in
// float64 leaves truncation and rounding errors near 1e-9, so atol 1e-6 and
// rtol 1e-5 are loose for a correct derivative and tight for a wrong one.
func checkGradients(t *testing.T, shapes []tensor.Shape, f func(g *G.ExprGraph, in []*G.Node) (*G.Node, error)) {
	t.Helper()
	const h, atol, rtol = 1e-6, 1e-6, 1e-5
	rng := rand.New(rand.NewPCG(7, 11))
	g := G.NewGraph()
	var in []*G.Node
	var vals []*tensor.Dense
	for i, s := range shapes {
		data := make([]float64, s.TotalSize())
		for j := range data {
			data[j] = rng.NormFloat64()
		}
		v := tensor.New(tensor.WithShape(s...), tensor.WithBacking(data))
		vals = append(vals, v)
		in = append(in, G.NodeFromAny(g, v, G.WithName("in"+string(rune('0'+i)))))
	}
	out, err := f(g, in)
	if err != nil {
		t.Fatal(err)
	}
	loss := out
	if !out.IsScalar() {
		r := make([]float64, out.Shape().TotalSize())
		for j := range r {
			r[j] = rng.NormFloat64()
		}
		rn := G.NodeFromAny(g, tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(r)), G.WithName("r"))
		if loss, err = G.Sum(G.Must(G.HadamardProd(out, rn))); err != nil {
			t.Fatal(err)
		}
	}
	grads, err := G.Grad(loss, in...)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	eval := func() float64 {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		return loss.Value().Data().(float64)
	}
	eval()
	analytic := make([][]float64, len(in))
	for i, gr := range grads {
		analytic[i] = append([]float64(nil), gr.Value().Data().([]float64)...)
	}
	for i, v := range vals {
		data := v.Data().([]float64)
		for j := range data {
			x := data[j]
			data[j] = x + h
			up := eval()
			data[j] = x - h
			down := eval()
			data[j] = x
			num := (up - down) / (2 * h)
			if a := analytic[i][j]; math.Abs(a-num) > atol+rtol*math.Abs(num) {
				t.Errorf("input %d [%d]: analytic gradient %.9g, finite differences %.9g", i, j, a, num)
			}
		}
	}
}

func TestLookupGradient(t *testing.T) {
	ids := []int32{3, 0, 1, 3, 4, 0}
	checkGradients(t, []tensor.Shape{{5, 3}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return lookup(in[0], &ids, len(ids))
	})
}

func TestLookupForward(t *testing.T) {
	ids := []int32{2, 0}
	table := tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))
	out, err := lookupOp(&ids, 2).Do(table)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*tensor.Dense).Data().([]float64)
	want := []float64{5, 6, 0, 0} // row 2, then the OOV/padding row as zeros
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("lookup = %v, want %v", got, want)
		}
	}
	ids[0] = 3
	if _, err := lookupOp(&ids, 2).Do(table); err == nil {
		t.Error("an index past the table: no error")
	}
}

func TestAddBiasGradient(t *testing.T) {
	checkGradients(t, []tensor.Shape{{4, 3}, {3}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return addBias(in[0], in[1])
	})
}

func TestMaskedSoftmaxGradient(t *testing.T) {
	lens := []int32{4, 1, 0, 2}
	checkGradients(t, []tensor.Shape{{4, 4}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return maskedSoftmax(in[0], &lens, 4)
	})
	checkGradients(t, []tensor.Shape{{16, 1}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return maskedSoftmax(in[0], &lens, 4) // scores as a column, as the attention unit gives them
	})
}

func TestMaskedSoftmaxForward(t *testing.T) {
	lens := []int32{2, 0}
	s := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{0, math.Log(3), 100, 1, 2, 3}))
	g := G.NewGraph()
	n := G.NodeFromAny(g, s)
	p, err := maskedSoftmax(n, &lens, 3)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := p.Value().Data().([]float64)
	want := []float64{0.25, 0.75, 0, 0, 0, 0} // the masked 100 does not count
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("masked softmax = %v, want %v", got, want)
		}
	}
}

func TestPoolGradient(t *testing.T) {
	checkGradients(t, []tensor.Shape{{3, 4}, {12, 2}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return pool(in[0], in[1])
	})
}

func TestRepeatRowsGradient(t *testing.T) {
	checkGradients(t, []tensor.Shape{{3, 2}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return repeatRows(in[0], 4)
	})
}

func TestFMGradientAndValue(t *testing.T) {
	checkGradients(t, []tensor.Shape{{3, 8}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return fm(in[0], 4)
	})
	// Against the definition Σ_{i<j} <x_i, x_j>.
	x := []float64{1, 2, 3, -1, 0.5, 4}
	g := G.NewGraph()
	n := G.NodeFromAny(g, tensor.New(tensor.WithShape(1, 6), tensor.WithBacking(x)))
	y, err := fm(n, 3)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	var want float64
	for i := 0; i < 3; i++ {
		for j := i + 1; j < 3; j++ {
			want += x[2*i]*x[2*j] + x[2*i+1]*x[2*j+1]
		}
	}
	if got := y.Value().Data().([]float64)[0]; math.Abs(got-want) > 1e-12 {
		t.Errorf("fm = %g, want %g", got, want)
	}
}

func TestBCELossGradientAndValue(t *testing.T) {
	labels := []float64{1, 0, 1, 0}
	weights := []float64{1, 1, 1, 0}
	checkGradients(t, []tensor.Shape{{4, 1}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return bceLoss(in[0], &labels, &weights)
	})
	z := []float64{2, -1, -30, 5}
	l, err := bceLoss(G.NodeFromAny(G.NewGraph(), tensor.New(tensor.WithShape(4, 1), tensor.WithBacking(z))), &labels, &weights)
	if err != nil {
		t.Fatal(err)
	}
	v, err := l.Op().Do(tensor.New(tensor.WithShape(4, 1), tensor.WithBacking(z)))
	if err != nil {
		t.Fatal(err)
	}
	want := (-math.Log(1/(1+math.Exp(-2))) - math.Log(1-1/(1+math.Exp(1))) - math.Log(1/(1+math.Exp(30)))) / 3
	if got := v.Data().(float64); math.Abs(got-want) > 1e-12 {
		t.Errorf("bce = %.15g, want %.15g (padding row excluded)", got, want)
	}
}

func TestSelfAttentionGradient(t *testing.T) {
	lens := []int32{3, 1, 0}
	checkGradients(t, []tensor.Shape{{9, 2}, {9, 2}, {9, 2}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return selfAttention(in[0], in[1], in[2], &lens, 3)
	})
}

// TestSelfAttentionIsCausal checks against a direct computation that row i
// mixes only the values of positions up to i and below the length.
func TestSelfAttentionIsCausal(t *testing.T) {
	const l, d = 4, 2
	lens := []int32{3}
	rng := rand.New(rand.NewPCG(1, 2))
	mk := func() []float64 {
		x := make([]float64, l*d)
		for i := range x {
			x[i] = rng.NormFloat64()
		}
		return x
	}
	q, k, v := mk(), mk(), mk()
	o := attnKernel[float64](lens, l, d, -1)
	out := make([]float64, l*d)
	o(out, [][]float64{q, k, v})
	for i := 0; i < l; i++ {
		m := min(i+1, 3)
		w := make([]float64, m)
		var sum float64
		for j := range w {
			w[j] = math.Exp((q[i*d]*k[j*d] + q[i*d+1]*k[j*d+1]) / math.Sqrt(d))
			sum += w[j]
		}
		for c := 0; c < d; c++ {
			var want float64
			for j := range w {
				want += w[j] / sum * v[j*d+c]
			}
			if math.Abs(out[i*d+c]-want) > 1e-12 {
				t.Errorf("row %d col %d = %g, want %g", i, c, out[i*d+c], want)
			}
		}
	}
}

func TestConcatColsGradient(t *testing.T) {
	checkGradients(t, []tensor.Shape{{3, 2}, {3, 1}, {3, 4}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
		return concatCols(in...)
	})
}

func TestElementwiseGradients(t *testing.T) {
	two := []tensor.Shape{{4, 3}, {4, 3}}
	checkGradients(t, two, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return add(in[0], in[1]) })
	checkGradients(t, two, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return mul(in[0], in[1]) })
	checkGradients(t, two, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return rowDot(in[0], in[1]) })
	checkGradients(t, two[:1], func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) { return relu(in[0]) })
}
