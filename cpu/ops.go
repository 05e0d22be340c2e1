package cpu

// The LLaMA-specific operations of the graph. Each is a Gorgonia Op with an
// explicit forward kernel and a symbolic derivative built from further ops,
// so Gorgonia's autodiff composes them. Writing them here (instead of
// chaining Gorgonia's generic element-wise ops) keeps the numerics exact
// (stable softmax, no InverseSqrt), avoids Gorgonia's in-place aliasing,
// and keeps the big intermediates (attention scores) out of the graph.

import (
	"fmt"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"gonum.org/v1/gonum/blas"

	"github.com/rella-project/rella/cpu/internal/gemm"
	"github.com/rella-project/rella/internal/gorgop"
)

// fnOp is a Gorgonia Op defined by closures (see package gorgop) whose
// state is its output tensor, reused across runs of its graph (see run).
type fnOp = gorgop.Op[reusedOutput]

// reusedOutput is the output tensor of a cpu op, kept by the op between
// runs of its graph; nil until the first run.
type reusedOutput struct{ out *tensor.Dense }

// sameType is the type a -> a -> ... -> a of an op with n inputs.
func sameType(n int) hm.Type {
	a := hm.TypeVariable('a')
	ts := make([]hm.Type, n+1)
	for i := range ts {
		ts[i] = a
	}
	return hm.NewFnType(ts...)
}

func shapeOf(i int) func([]tensor.Shape) (tensor.Shape, error) {
	return func(in []tensor.Shape) (tensor.Shape, error) { return in[i].Clone(), nil }
}

// apply builds a node for op on the inputs, turning a panic-free error into one naming the op.
func apply(op *fnOp, in ...*G.Node) (*G.Node, error) {
	n, err := G.ApplyOp(op, in...)
	if err != nil {
		return nil, fmt.Errorf("cpu: graph: %s: %w", op.Name, err)
	}
	return n, nil
}

// dense returns v as a contiguous *tensor.Dense.
func dense(v G.Value) (*tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("value %T is not a dense tensor", v)
	}
	if d.IsView() {
		d = d.Materialize().(*tensor.Dense)
	}
	return d, nil
}

// scalar reads a scalar value (a gradient seed).
func scalar(v G.Value) (float64, error) {
	switch s := v.(type) {
	case *G.F32:
		return float64(*s), nil
	case *G.F64:
		return float64(*s), nil
	case *tensor.Dense:
		switch d := s.Data().(type) {
		case []float32:
			return float64(d[0]), nil
		case []float64:
			return d[0], nil
		case float32:
			return float64(d), nil
		case float64:
			return d, nil
		}
	}
	return 0, fmt.Errorf("value %T is not a float scalar", v)
}

// run applies f to the inputs' data as []float32 or []float64 (all inputs
// of one dtype) and returns the op's output tensor of the given shape. The
// tensor is the op's own and is reused by the next run of the graph: every
// kernel writes all of its output (GEMMs with beta = 0 overwrite it), so
// it is neither zeroed nor reallocated. One run uses each op once, and the
// engine reads a graph's outputs before it runs the graph again.
func (r *reusedOutput) run(shape tensor.Shape, in []G.Value, f32 gorgop.Kernel[float32], f64 gorgop.Kernel[float64]) (G.Value, error) {
	ds := make([]*tensor.Dense, len(in))
	for i, v := range in {
		d, err := dense(v)
		if err != nil {
			return nil, err
		}
		ds[i] = d
	}
	dt := ds[0].Dtype()
	out := r.out
	if out == nil || out.Dtype() != dt || !out.Shape().Eq(shape) {
		out = tensor.New(tensor.Of(dt), tensor.WithShape(shape...))
		r.out = out
	}
	if err := gorgop.Call(out, ds, f32, f64); err != nil {
		return nil, err
	}
	return out, nil
}

// parallel runs f over [0,n) in chunks on all cores, however small n is.
func parallel(n int, f func(lo, hi int)) { gorgop.Parallel(n, 1, f) }

// matmul computes c = op(a)·op(b) + beta·c on row-major data with mm.
func matmul[T gorgop.Float](mm gemm.GEMM, tA, tB blas.Transpose, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	gemmScaled(mm, tA, tB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
}

// gemmScaled computes c = alpha·op(a)·op(b) + beta·c on row-major data with mm.
func gemmScaled[T gorgop.Float](mm gemm.GEMM, tA, tB blas.Transpose, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	switch av := any(a).(type) {
	case []float32:
		mm.Sgemm(tA, tB, m, n, k, float32(alpha), av, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		mm.Dgemm(tA, tB, m, n, k, float64(alpha), av, lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}

// ---- linear: y = x·Wᵀ, x [N, in], W [out, in] (HF layout) ----

func linear(mm gemm.GEMM, x, w *G.Node) (*G.Node, error) {
	return apply(linearOp(mm), x, w)
}

func linearOp(mm gemm.GEMM) *fnOp {
	return &fnOp{Name: "linear", Inputs: 2, Sig: sameType(2), WRT: []bool{true, true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[1].Dims() != 2 || in[0][1] != in[1][1] {
				return nil, fmt.Errorf("shapes %v and %v", in[0], in[1])
			}
			return tensor.Shape{in[0][0], in[1][0]}, nil
		},
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			s0, s1 := in[0].Shape(), in[1].Shape()
			n, k, m := s0[0], s0[1], s1[0]
			return op.State.run(tensor.Shape{n, m}, in,
				func(o []float32, x [][]float32) {
					matmul(mm, blas.NoTrans, blas.Trans, n, m, k, x[0], k, x[1], k, 0, o, m)
				},
				func(o []float64, x [][]float64) {
					matmul(mm, blas.NoTrans, blas.Trans, n, m, k, x[0], k, x[1], k, 0, o, m)
				})
		},
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			dx, err := apply(matmulNNOp(mm, 1), g, in[1]) // g [N,out] · W [out,in]
			if err != nil {
				return nil, err
			}
			dw, err := apply(matmulTNOp(mm, 1), g, in[0]) // gᵀ [out,N] · x [N,in]
			if err != nil {
				return nil, err
			}
			return G.Nodes{dx, dw}, nil
		},
	}
}

// loraOut computes y + s·xa·Bᵀ for y [N, out], xa [N, r] and B [out, r]
// (HF layout) in one op: the scale and the sum ride on the GEMM (alpha s,
// beta 1 on a copy of y) instead of two element-wise passes each way.
func loraOut(mm gemm.GEMM, y, xa, b *G.Node, s float64) (*G.Node, error) {
	op := &fnOp{Name: fmt.Sprintf("loraOut(%g)", s), Inputs: 3, Sig: sameType(3), WRT: []bool{true, true, true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[1].Dims() != 2 || in[2].Dims() != 2 || in[1][1] != in[2][1] || in[0][0] != in[1][0] || in[0][1] != in[2][0] {
				return nil, fmt.Errorf("shapes %v, %v and %v", in[0], in[1], in[2])
			}
			return in[0].Clone(), nil
		},
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			s0, s1 := in[0].Shape(), in[1].Shape()
			n, m, k := s0[0], s0[1], s1[1]
			return op.State.run(s0, in,
				func(o []float32, x [][]float32) {
					copy(o, x[0])
					gemmScaled(mm, blas.NoTrans, blas.Trans, n, m, k, float32(s), x[1], k, x[2], k, 1, o, m)
				},
				func(o []float64, x [][]float64) {
					copy(o, x[0])
					gemmScaled(mm, blas.NoTrans, blas.Trans, n, m, k, s, x[1], k, x[2], k, 1, o, m)
				})
		},
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			dxa, err := apply(matmulNNOp(mm, s), g, in[2]) // s·g [N,out] · B [out,r]
			if err != nil {
				return nil, err
			}
			db, err := apply(matmulTNOp(mm, s), g, in[1]) // s·gᵀ [out,N] · xa [N,r]
			if err != nil {
				return nil, err
			}
			return G.Nodes{g, dxa, db}, nil
		},
	}
	return apply(op, y, xa, b)
}

// matmulNNOp: alpha·a [n,k] · b [k,m].
func matmulNNOp(mm gemm.GEMM, alpha float64) *fnOp {
	return &fnOp{Name: "matmulNN", Inputs: 2, Sig: sameType(2),
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in[0][0], in[1][1]}, nil },
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			s0, s1 := in[0].Shape(), in[1].Shape()
			n, k, m := s0[0], s0[1], s1[1]
			return op.State.run(tensor.Shape{n, m}, in,
				func(o []float32, x [][]float32) {
					gemmScaled(mm, blas.NoTrans, blas.NoTrans, n, m, k, float32(alpha), x[0], k, x[1], m, 0, o, m)
				},
				func(o []float64, x [][]float64) {
					gemmScaled(mm, blas.NoTrans, blas.NoTrans, n, m, k, alpha, x[0], k, x[1], m, 0, o, m)
				})
		},
	}
}

// matmulTNOp: alpha·aᵀ · b with a [k,n], b [k,m].
func matmulTNOp(mm gemm.GEMM, alpha float64) *fnOp {
	return &fnOp{Name: "matmulTN", Inputs: 2, Sig: sameType(2),
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in[0][1], in[1][1]}, nil },
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			s0, s1 := in[0].Shape(), in[1].Shape()
			k, n, m := s0[0], s0[1], s1[1]
			return op.State.run(tensor.Shape{n, m}, in,
				func(o []float32, x [][]float32) {
					gemmScaled(mm, blas.Trans, blas.NoTrans, n, m, k, float32(alpha), x[0], n, x[1], m, 0, o, m)
				},
				func(o []float64, x [][]float64) {
					gemmScaled(mm, blas.Trans, blas.NoTrans, n, m, k, alpha, x[0], n, x[1], m, 0, o, m)
				})
		},
	}
}

// ---- element-wise: add, dropout mask ----

func add(a, b *G.Node) (*G.Node, error) {
	op := &fnOp{Name: "add", Inputs: 2, Sig: sameType(2), WRT: []bool{true, true}, OutShape: shapeOf(0),
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			return op.State.run(in[0].Shape(), in, addKernel[float32], addKernel[float64])
		},
		Diff: func(_ G.Nodes, _, g *G.Node) (G.Nodes, error) { return G.Nodes{g, g}, nil },
	}
	return apply(op, a, b)
}

func addKernel[T gorgop.Float](o []T, x [][]T) {
	a, b := x[0], x[1]
	for i := range o {
		o[i] = a[i] + b[i]
	}
}

// maskMul multiplies element-wise by *mask (same length as x), a constant
// the engine refills before each run (inverted dropout).
func maskMul(x *G.Node, mask *[]float64) (*G.Node, error) { return apply(maskOp(mask), x) }

func maskOp(mask *[]float64) *fnOp {
	return &fnOp{Name: "dropoutMask", Inputs: 1, Sig: sameType(1), WRT: []bool{true}, OutShape: shapeOf(0),
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			if len(*mask) != in[0].Shape().TotalSize() {
				return nil, fmt.Errorf("dropout mask has %d values for a %v tensor", len(*mask), in[0].Shape())
			}
			return op.State.run(in[0].Shape(), in, maskKernel[float32](mask), maskKernel[float64](mask))
		},
		Diff: func(_ G.Nodes, _, g *G.Node) (G.Nodes, error) {
			d, err := maskMul(g, mask)
			return G.Nodes{d}, err
		},
	}
}

func maskKernel[T gorgop.Float](mask *[]float64) func(o []T, x [][]T) {
	return func(o []T, x [][]T) {
		m := *mask
		for i, v := range x[0] {
			o[i] = v * T(m[i])
		}
	}
}

// ---- RMSNorm with a frozen weight ----

func rmsNorm(x *G.Node, w []float64, eps float64) (*G.Node, error) {
	op := &fnOp{Name: "rmsnorm", Inputs: 1, Sig: sameType(1), WRT: []bool{true}, OutShape: shapeOf(0),
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			if in[0].Shape()[1] != len(w) {
				return nil, fmt.Errorf("input %v, weight %d", in[0].Shape(), len(w))
			}
			return op.State.run(in[0].Shape(), in, rmsKernel[float32](w, eps, false), rmsKernel[float64](w, eps, false))
		},
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			op := &fnOp{Name: "rmsnormGrad", Inputs: 2, Sig: sameType(2), OutShape: shapeOf(0),
				Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
					return op.State.run(in[0].Shape(), in, rmsKernel[float32](w, eps, true), rmsKernel[float64](w, eps, true))
				}}
			d, err := apply(op, in[0], g)
			return G.Nodes{d}, err
		},
	}
	return apply(op, x)
}

// rmsKernel computes y = x·r·w with r = 1/sqrt(mean(x²)+eps) per row, or
// (grad) dx = r·(g∘w) − x·r³·Σ(g∘w∘x)/D.
func rmsKernel[T gorgop.Float](w []float64, eps float64, grad bool) func(o []T, x [][]T) {
	return func(o []T, in [][]T) {
		d := len(w)
		x := in[0]
		parallel(len(x)/d, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row, out := x[r*d:(r+1)*d], o[r*d:(r+1)*d]
				var ss float64
				for _, v := range row {
					ss += float64(v) * float64(v)
				}
				inv := 1 / math.Sqrt(ss/float64(d)+eps)
				if !grad {
					for i, v := range row {
						out[i] = T(float64(v) * inv * w[i])
					}
					continue
				}
				g := in[1][r*d : (r+1)*d]
				var s float64
				for i, v := range row {
					s += float64(g[i]) * w[i] * float64(v)
				}
				c := inv * inv * inv * s / float64(d)
				for i, v := range row {
					out[i] = T(inv*float64(g[i])*w[i] - float64(v)*c)
				}
			}
		})
	}
}

// ---- rotary position embedding (HF rotate-half) ----

// rope rotates x [B*T, heads*hd] by position t = row mod T and multiplies by
// mul (1/sqrt(hd) folds the attention scale into q). cos and sin are
// [maxT, hd/2] tables.
func rope(x *G.Node, cos, sin []float64, T, heads, hd int, mul float64) (*G.Node, error) {
	return apply(ropeOp(cos, sin, T, heads, hd, mul, false), x)
}

func ropeOp(cos, sin []float64, T, heads, hd int, mul float64, inverse bool) *fnOp {
	return &fnOp{Name: "rope", Inputs: 1, Sig: sameType(1), WRT: []bool{true}, OutShape: shapeOf(0),
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			s := in[0].Shape()
			if s[1] != heads*hd || s[0]%T != 0 || len(cos) < T*hd/2 {
				return nil, fmt.Errorf("input %v, T %d, heads %d, head_dim %d, table %d", s, T, heads, hd, len(cos))
			}
			return op.State.run(s, in, ropeKernel[float32](cos, sin, T, heads, hd, mul, inverse), ropeKernel[float64](cos, sin, T, heads, hd, mul, inverse))
		},
		Diff: func(_ G.Nodes, _, g *G.Node) (G.Nodes, error) {
			d, err := apply(ropeOp(cos, sin, T, heads, hd, mul, !inverse), g)
			return G.Nodes{d}, err
		},
	}
}

func ropeKernel[T gorgop.Float](cos, sin []float64, seqT, heads, hd int, mul float64, inverse bool) func(o []T, x [][]T) {
	return func(o []T, in [][]T) {
		x := in[0]
		half := hd / 2
		width := heads * hd
		parallel(len(x)/width, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				t := r % seqT
				for h := 0; h < heads; h++ {
					base := r*width + h*hd
					for i := 0; i < half; i++ {
						c, s := cos[t*half+i]*mul, sin[t*half+i]*mul
						if inverse {
							s = -s
						}
						x1, x2 := float64(x[base+i]), float64(x[base+i+half])
						o[base+i] = T(x1*c - x2*s)
						o[base+i+half] = T(x2*c + x1*s)
					}
				}
			}
		})
	}
}

// ropeTables returns cos and sin of t·θ^(−2i/hd) for t < maxT, i < hd/2.
func ropeTables(maxT, hd int, theta float64) (cos, sin []float64) {
	half := hd / 2
	cos, sin = make([]float64, maxT*half), make([]float64, maxT*half)
	for i := 0; i < half; i++ {
		inv := math.Pow(theta, -2*float64(i)/float64(hd))
		for t := 0; t < maxT; t++ {
			a := float64(t) * inv
			cos[t*half+i], sin[t*half+i] = math.Cos(a), math.Sin(a)
		}
	}
	return cos, sin
}

// ---- SwiGLU: silu(a)∘b ----

// swiglu's backward pass is one op (each sigmoid computed once, each
// input read once) whose [2N, F] output stacks d/da over d/db; rowsView
// hands each half on without a copy.
func swiglu(a, b *G.Node) (*G.Node, error) {
	op := &fnOp{Name: "swiglu", Inputs: 2, Sig: sameType(2), WRT: []bool{true, true}, OutShape: shapeOf(0),
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			return op.State.run(in[0].Shape(), in, swigluKernel[float32], swigluKernel[float64])
		},
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			rows := in[0].Shape()[0]
			op := &fnOp{Name: "swigluGrad", Inputs: 3, Sig: sameType(3),
				OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{2 * in[0][0], in[0][1]}, nil },
				Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
					s := in[0].Shape()
					return op.State.run(tensor.Shape{2 * s[0], s[1]}, in, swigluGradKernel[float32], swigluGradKernel[float64])
				}}
			d, err := apply(op, in[0], in[1], g)
			if err != nil {
				return nil, err
			}
			da, err := rowsView(d, 0, rows)
			if err != nil {
				return nil, err
			}
			db, err := rowsView(d, rows, rows)
			if err != nil {
				return nil, err
			}
			return G.Nodes{da, db}, nil
		},
	}
	return apply(op, a, b)
}

// swigluKernel computes silu(a)∘b (inputs a, b).
func swigluKernel[T gorgop.Float](o []T, in [][]T) {
	a, b := in[0], in[1]
	parallel(len(a), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			av := float64(a[i])
			o[i] = T(av * sigmoid[T](av) * float64(b[i]))
		}
	})
}

// swigluGradKernel writes d/da = g∘b∘σ(a)(1+a(1−σ(a))) to the first half
// of o and d/db = g∘silu(a) to the second (inputs a, b, g).
func swigluGradKernel[T gorgop.Float](o []T, in [][]T) {
	a, b, g := in[0], in[1], in[2]
	da, db := o[:len(a)], o[len(a):]
	parallel(len(a), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			av, gv := float64(a[i]), float64(g[i])
			sig := sigmoid[T](av)
			da[i] = T(gv * float64(b[i]) * sig * (1 + av*(1-sig)))
			db[i] = T(gv * av * sig)
		}
	})
}

// sigmoid is 1/(1+e^−x): with math.Exp for float64 data (the
// finite-difference tests), and for float32 data with a degree-7
// polynomial after range reduction (relative error about 1e-8, far below
// float32's 6e-8 rounding), about twice as fast.
func sigmoid[T gorgop.Float](x float64) float64 {
	if _, ok := any(T(0)).(float64); ok {
		return 1 / (1 + math.Exp(-x))
	}
	y := -x // e^y stays a normal float64 (σ is 0 or 1 in float32 long before)
	if y > 700 {
		y = 700
	} else if y < -700 {
		y = -700
	}
	const log2e, ln2hi, ln2lo = 1.4426950408889634, 6.93147180369123816490e-01, 1.90821492927058770002e-10
	n := math.Floor(y*log2e + 0.5)
	r := y - n*ln2hi - n*ln2lo // |r| ≤ ln2/2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	return 1 / (1 + p*math.Float64frombits(uint64(int64(n)+1023)<<52))
}

// rowsView returns rows [off, off+n) of a matrix as a tensor sharing its
// data (not differentiable). The view lives as long as the source's
// output, which its op reuses, like every op's, from run to run.
func rowsView(x *G.Node, off, n int) (*G.Node, error) {
	op := &fnOp{Name: fmt.Sprintf("rows[%d:%d]", off, off+n), Inputs: 1, Sig: sameType(1),
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{n, in[0][1]}, nil },
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			d, err := dense(in[0])
			if err != nil {
				return nil, err
			}
			s := d.Shape()
			if s.Dims() != 2 || off+n > s[0] {
				return nil, fmt.Errorf("rows [%d, %d) of a %v tensor", off, off+n, s)
			}
			lo, hi := off*s[1], (off+n)*s[1]
			var backing any
			switch x := d.Data().(type) {
			case []float32:
				backing = x[lo:hi]
			case []float64:
				backing = x[lo:hi]
			default:
				return nil, fmt.Errorf("dtype %v", d.Dtype())
			}
			return tensor.New(tensor.WithShape(n, s[1]), tensor.WithBacking(backing)), nil
		}}
	return apply(op, x)
}

// ---- causal grouped-query attention ----

// attention computes softmax(q·kᵀ + causal mask)·v per (sequence, head) for
// q [B*T, H*hd] (already rotated and scaled), k, v [B*T, KV*hd]; query head
// h reads kv head h/(H/KV) (HF repeat_kv). Rows t ≥ a sequence's length
// (right padding) see only earlier keys, so real rows never see padding.
// The backward pass recomputes the probabilities (nothing T×T is kept) and
// yields dq, dk, dv packed side by side in one [B*T, H*hd+2*KV*hd] tensor.
func attention(mm gemm.GEMM, q, k, v *G.Node, T, H, KV, hd int) (*G.Node, error) {
	qw, kw := H*hd, KV*hd
	op := &fnOp{Name: "attention", Inputs: 3, Sig: sameType(3), WRT: []bool{true, true, true}, OutShape: shapeOf(0),
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			return op.State.run(in[0].Shape(), in, attnKernel[float32](mm, T, H, KV, hd, false), attnKernel[float64](mm, T, H, KV, hd, false))
		},
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			rows := in[0].Shape()[0]
			packed := tensor.Shape{rows, qw + 2*kw}
			op := &fnOp{Name: "attentionGrad", Inputs: 4, Sig: sameType(4),
				OutShape: func([]tensor.Shape) (tensor.Shape, error) { return packed.Clone(), nil },
				Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
					return op.State.run(packed, in, attnKernel[float32](mm, T, H, KV, hd, true), attnKernel[float64](mm, T, H, KV, hd, true))
				}}
			d, err := apply(op, in[0], in[1], in[2], g)
			if err != nil {
				return nil, err
			}
			var out G.Nodes
			for _, c := range [][2]int{{0, qw}, {qw, kw}, {qw + kw, kw}} {
				n, err := columns(d, c[0], c[1])
				if err != nil {
					return nil, err
				}
				out = append(out, n)
			}
			return out, nil
		},
	}
	return apply(op, q, k, v)
}

// columns copies columns [off, off+width) of a matrix (not differentiable).
func columns(x *G.Node, off, width int) (*G.Node, error) {
	op := &fnOp{Name: fmt.Sprintf("columns[%d:%d]", off, off+width), Inputs: 1, Sig: sameType(1),
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in[0][0], width}, nil },
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			s := in[0].Shape()
			return op.State.run(tensor.Shape{s[0], width}, in, colsKernel[float32](s[1], off, width), colsKernel[float64](s[1], off, width))
		}}
	return apply(op, x)
}

func colsKernel[T gorgop.Float](stride, off, width int) func(o []T, x [][]T) {
	return func(o []T, in [][]T) {
		for r := 0; r < len(o)/width; r++ {
			copy(o[r*width:(r+1)*width], in[0][r*stride+off:])
		}
	}
}

// attnBlock is the number of query rows processed together; keys beyond a
// block's last row are skipped (causal), which halves the work for long T.
const attnBlock = 64

// attnKernel computes the attention output (inputs q,k,v) or, with grad,
// the packed [dq | dk | dv] (inputs q,k,v,g). Gradients of k and v sum over
// the query heads of a group.
func attnKernel[E gorgop.Float](mm gemm.GEMM, T, H, KV, hd int, grad bool) func(o []E, x [][]E) {
	return func(o []E, in [][]E) {
		q, k, v := in[0], in[1], in[2]
		qw, kw := H*hd, KV*hd
		B := len(q) / (T * qw)
		group := H / KV
		ow, dkOff, dvOff := qw, 0, 0 // output row stride and dk/dv column offsets
		if grad {
			ow, dkOff, dvOff = qw+2*kw, qw, qw+kw
			clear(o) // dk and dv accumulate; the forward output is written whole
		}
		exp := math.Exp
		if _, ok := any(E(0)).(float32); ok {
			exp = expNonPos
		}
		// Work items are (b, kv head): the heads of a group share k and v, so
		// one worker owns the k/v gradient block of its item. With gonum,
		// items run on parallel goroutines. A library with a thread pool of
		// its own (OpenBLAS) is called from one goroutine at a time, as
		// concurrent calls contend for its threads: items run in turn, each
		// GEMM on all the library's threads. (Splitting the softmax rows over
		// goroutines as well measured slower on 2 cores: the pool's threads
		// spin for a while after each call.)
		items := func(lo, hi int) {
			s := make([]E, attnBlock*T)  // probabilities of a block of rows
			dp := make([]E, attnBlock*T) // their gradient
			kT := make([]E, hd*T)        // k of this item transposed [hd, T]
			vT := make([]E, hd*T)
			for item := lo; item < hi; item++ {
				b, j := item/KV, item%KV
				kOff := b*T*kw + j*hd // k and v share the layout
				for t := 0; t < T; t++ {
					for c := 0; c < hd; c++ {
						kT[c*T+t] = k[kOff+t*kw+c]
						vT[c*T+t] = v[kOff+t*kw+c]
					}
				}
				for hh := 0; hh < group; hh++ {
					h := j*group + hh
					qOff := b*T*qw + h*hd
					for r0 := 0; r0 < T; r0 += attnBlock {
						m, n := min(attnBlock, T-r0), min(r0+attnBlock, T) // rows, keys
						qb := qOff + r0*qw
						// s = q_block · k[:n]ᵀ, then a causal softmax per row
						matmul(mm, blas.NoTrans, blas.NoTrans, m, n, hd, q[qb:], qw, kT, T, 0, s, n)
						for i := 0; i < m; i++ {
							t := r0 + i
							row := s[i*n : (i+1)*n]
							mx := row[0]
							for _, x := range row[1 : t+1] {
								if x > mx {
									mx = x
								}
							}
							var sum float64
							for u := 0; u <= t; u++ {
								e := exp(float64(row[u] - mx))
								row[u] = E(e)
								sum += e
							}
							inv := 1 / sum
							for u := 0; u <= t; u++ {
								row[u] = E(float64(row[u]) * inv)
							}
							clear(row[t+1:])
						}
						ob := (b*T+r0)*ow + h*hd
						if !grad { // o_block = p · v[:n]
							matmul(mm, blas.NoTrans, blas.NoTrans, m, hd, n, s, n, v[kOff:], kw, 0, o[ob:], ow)
							continue
						}
						g := in[3][qb:]
						dkv := (b*T)*ow + j*hd
						// dv[:n] += pᵀ · g_block
						matmul(mm, blas.Trans, blas.NoTrans, n, hd, m, s, n, g, qw, 1, o[dkv+dvOff:], ow)
						// dp = g_block · v[:n]ᵀ ; ds = p∘(dp − rowsum(dp∘p))
						matmul(mm, blas.NoTrans, blas.NoTrans, m, n, hd, g, qw, vT, T, 0, dp, n)
						for i := 0; i < m; i++ {
							t := r0 + i
							p, d := s[i*n:(i+1)*n], dp[i*n:(i+1)*n]
							var dot float64
							for u := 0; u <= t; u++ {
								dot += float64(p[u]) * float64(d[u])
							}
							for u := 0; u <= t; u++ {
								d[u] = E(float64(p[u]) * (float64(d[u]) - dot))
							}
							clear(d[t+1:])
						}
						// dq_block = ds · k[:n] ; dk[:n] += dsᵀ · q_block
						matmul(mm, blas.NoTrans, blas.NoTrans, m, hd, n, dp, n, k[kOff:], kw, 0, o[ob:], ow)
						matmul(mm, blas.Trans, blas.NoTrans, n, hd, m, dp, n, q[qb:], qw, 1, o[dkv+dkOff:], ow)
					}
				}
			}
		}
		if mm.OwnThreads() {
			items(0, B*KV)
		} else {
			parallel(B*KV, items)
		}
	}
}

// ---- gather rows / scatter back ----

// gather picks rows *idx of x [M, D]; *idx has a fixed length and is refilled
// by the engine before each run.
func gather(x *G.Node, idx *[]int) (*G.Node, error) {
	n := len(*idx)
	op := &fnOp{Name: "gather", Inputs: 1, Sig: sameType(1), WRT: []bool{true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{n, in[0][1]}, nil },
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			s := in[0].Shape()
			return op.State.run(tensor.Shape{n, s[1]}, in, gatherKernel[float32](*idx, s[1], false), gatherKernel[float64](*idx, s[1], false))
		},
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			m := in[0].Shape()[0]
			op := &fnOp{Name: "scatter", Inputs: 1, Sig: sameType(1),
				OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{m, in[0][1]}, nil },
				Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
					d := in[0].Shape()[1]
					return op.State.run(tensor.Shape{m, d}, in, gatherKernel[float32](*idx, d, true), gatherKernel[float64](*idx, d, true))
				}}
			d, err := apply(op, g)
			return G.Nodes{d}, err
		},
	}
	return apply(op, x)
}

func gatherKernel[T gorgop.Float](idx []int, d int, scatter bool) func(o []T, x [][]T) {
	return func(o []T, in [][]T) {
		x := in[0]
		if scatter {
			for i := range o {
				o[i] = 0
			}
		}
		for r, i := range idx {
			if scatter {
				for c := 0; c < d; c++ {
					o[i*d+c] += x[r*d+c]
				}
			} else {
				copy(o[r*d:(r+1)*d], x[i*d:(i+1)*d])
			}
		}
	}
}

// ---- cross-entropy ----

// ceState holds the labels of the rows of the logits (refilled per run),
// their weights (0 for padding rows) and the loss of the last run in float64.
type ceState struct {
	labels []int
	weight []float64
	loss   float64
}

// crossEntropy returns the scalar Σ_n w_n·(logsumexp(x_n) − x_n[label_n]) of logits x [N, V].
func crossEntropy(x *G.Node, st *ceState) (*G.Node, error) {
	a := hm.TypeVariable('a')
	op := &fnOp{Name: "crossEntropy", Inputs: 1, Sig: hm.NewFnType(G.TensorType{Dims: 2, Of: a}, a), WRT: []bool{true},
		OutShape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.ScalarShape(), nil },
		Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
			d, err := dense(in[0])
			if err != nil {
				return nil, err
			}
			var loss float64
			switch x := d.Data().(type) {
			case []float32:
				loss = ceForward(x, st)
				return G.NewF32(float32(loss)), nil
			case []float64:
				loss = ceForward(x, st)
				return G.NewF64(loss), nil
			}
			return nil, fmt.Errorf("dtype %v", d.Dtype())
		},
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			op := &fnOp{Name: "crossEntropyGrad", Inputs: 2, Sig: hm.NewFnType(G.TensorType{Dims: 2, Of: a}, a, G.TensorType{Dims: 2, Of: a}), OutShape: shapeOf(0),
				Forward: func(op *fnOp, in []G.Value) (G.Value, error) {
					gs, err := scalar(in[1])
					if err != nil {
						return nil, err
					}
					return op.State.run(in[0].Shape(), in[:1], ceGradKernel[float32](st, gs), ceGradKernel[float64](st, gs))
				}}
			d, err := apply(op, in[0], g)
			return G.Nodes{d}, err
		},
	}
	return apply(op, x)
}

func ceForward[T gorgop.Float](x []T, st *ceState) float64 {
	n := len(st.labels)
	v := len(x) / n
	var total float64
	for r := 0; r < n; r++ {
		if st.weight[r] == 0 {
			continue
		}
		row := x[r*v : (r+1)*v]
		total += st.weight[r] * (logSumExp(row) - float64(row[st.labels[r]]))
	}
	st.loss = total
	return total
}

func logSumExp[T gorgop.Float](row []T) float64 {
	m := float64(row[0])
	for _, e := range row {
		m = math.Max(m, float64(e))
	}
	var s float64
	for _, e := range row {
		s += math.Exp(float64(e) - m)
	}
	return m + math.Log(s)
}

func ceGradKernel[T gorgop.Float](st *ceState, g float64) func(o []T, x [][]T) {
	return func(o []T, in [][]T) {
		x := in[0]
		n := len(st.labels)
		v := len(x) / n
		for r := 0; r < n; r++ {
			row, out := x[r*v:(r+1)*v], o[r*v:(r+1)*v]
			w := st.weight[r] * g
			if w == 0 {
				for i := range out {
					out[i] = 0
				}
				continue
			}
			lse := logSumExp(row)
			for i, e := range row {
				out[i] = T(w * math.Exp(float64(e)-lse))
			}
			out[st.labels[r]] -= T(w)
		}
	}
}

// expNonPos is e^x for x ≤ 0 with a relative error below 1e-8: enough for
// float32 results, and about twice as fast as math.Exp.
func expNonPos(x float64) float64 {
	if x < -700 {
		return 0
	}
	const log2e, ln2hi, ln2lo = 1.4426950408889634, 6.93147180369123816490e-01, 1.90821492927058770002e-10
	n := math.Floor(x*log2e + 0.5)
	r := x - n*ln2hi - n*ln2lo // |r| ≤ ln2/2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040+r*(1.0/40320))))))))
	return p * math.Float64frombits(uint64(int64(n)+1023)<<52)
}
