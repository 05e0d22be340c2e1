package baseline

// The custom operations the baselines need beyond Gorgonia's matrix
// product and element-wise arithmetic. Each has a finite-difference test
// (ops_test.go).

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/rella-project/rella/internal/gorgop"
)

// lookup gathers rows of table [V, d] by *ids (n indices, refilled before
// each run): out [n, d]. Index 0 is out-of-vocabulary / padding: its row of
// the output is zero and it gets no gradient, so the OOV embedding is a
// fixed zero vector.
func lookup(table *G.Node, ids *[]int32, n int) (*G.Node, error) {
	return apply(lookupOp(ids, n), table)
}

func lookupOp(ids *[]int32, n int) *op {
	return &op{Name: "lookup", Inputs: 1, WRT: []bool{true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			if err := want2D(in[0], "table"); err != nil {
				return nil, err
			}
			return tensor.Shape{n, in[0][1]}, nil
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			v, d := in[0].Shape()[0], in[0].Shape()[1]
			if len(*ids) != n {
				return nil, fmt.Errorf("%d indices, want %d", len(*ids), n)
			}
			for i, id := range *ids {
				if id < 0 || int(id) >= v {
					return nil, fmt.Errorf("index %d at %d is outside the table's %d rows", id, i, v)
				}
			}
			return run(tensor.Shape{n, d}, in, lookupKernel[float32](*ids, d), lookupKernel[float64](*ids, d))
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			v := in[0].Shape()[0]
			grad := &op{Name: "lookupGrad", Inputs: 1,
				OutShape: func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{v, s[0][1]}, nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					d := x[0].Shape()[1]
					return run(tensor.Shape{v, d}, x, scatterKernel[float32](*ids, d), scatterKernel[float64](*ids, d))
				})}
			dt, err := apply(grad, g)
			return G.Nodes{dt}, err
		},
	}
}

func lookupKernel[T gorgop.Float](ids []int32, d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for i, id := range ids {
			if id != 0 {
				copy(o[i*d:(i+1)*d], x[0][int(id)*d:(int(id)+1)*d])
			}
		}
	}
}

func scatterKernel[T gorgop.Float](ids []int32, d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for i, id := range ids {
			if id == 0 {
				continue
			}
			row := o[int(id)*d : (int(id)+1)*d]
			for k, g := range x[0][i*d : (i+1)*d] {
				row[k] += g
			}
		}
	}
}

// addBias adds b [h] to every row of x [n, h].
func addBias(x, b *G.Node) (*G.Node, error) {
	o := &op{Name: "addBias", Inputs: 2, WRT: []bool{true, true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[1].TotalSize() != in[0][1] {
				return nil, fmt.Errorf("shapes %v and %v", in[0], in[1])
			}
			return in[0].Clone(), nil
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			return run(in[0].Shape(), in, addBiasKernel[float32], addBiasKernel[float64])
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			colSum := &op{Name: "colSum", Inputs: 1,
				OutShape: func(s []tensor.Shape) (tensor.Shape, error) { return in[1].Shape().Clone(), nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					return run(in[1].Shape().Clone(), x, colSumKernel[float32], colSumKernel[float64])
				})}
			db, err := apply(colSum, g)
			return G.Nodes{g, db}, err
		},
	}
	return apply(o, x, b)
}

func addBiasKernel[T gorgop.Float](o []T, x [][]T) {
	h := len(x[1])
	chunks(len(o)/h, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, out := x[0][r*h:(r+1)*h], o[r*h:(r+1)*h]
			for i, v := range row {
				out[i] = v + x[1][i]
			}
		}
	})
}

func colSumKernel[T gorgop.Float](o []T, x [][]T) {
	h := len(o)
	for i, v := range x[0] {
		o[i%h] += v
	}
}

// maskedSoftmax is the softmax of each row of l scores over its first
// (*lens)[b] positions; the other positions are 0, and a row with no valid
// position is all 0. s holds B*l scores, as [B, l] or [B*l, 1]; the output
// is [B, l].
func maskedSoftmax(s *G.Node, lens *[]int32, l int) (*G.Node, error) {
	inShape := s.Shape().Clone()
	o := &op{Name: "maskedSoftmax", Inputs: 1, WRT: []bool{true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			n := in[0].TotalSize()
			if n%l != 0 {
				return nil, fmt.Errorf("%v scores are not rows of %d", in[0], l)
			}
			return tensor.Shape{n / l, l}, nil
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			n := in[0].Shape().TotalSize()
			if len(*lens)*l != n {
				return nil, fmt.Errorf("%d lengths for %v scores in rows of %d", len(*lens), in[0].Shape(), l)
			}
			return run(tensor.Shape{n / l, l}, in, softmaxKernel[float32](*lens, l), softmaxKernel[float64](*lens, l))
		}),
		Diff: func(_ G.Nodes, out, g *G.Node) (G.Nodes, error) {
			grad := &op{Name: "maskedSoftmaxGrad", Inputs: 2, // (p, g) -> the scores' gradient, in their shape
				OutShape: func([]tensor.Shape) (tensor.Shape, error) { return inShape, nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					return run(inShape, x, softmaxGradKernel[float32](l), softmaxGradKernel[float64](l))
				})}
			d, err := apply(grad, out, g)
			return G.Nodes{d}, err
		},
	}
	return apply(o, s)
}

func softmaxKernel[T gorgop.Float](lens []int32, l int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for b, n := range lens {
			n := min(int(n), l)
			row, out := x[0][b*l:b*l+n], o[b*l:b*l+n]
			if n == 0 {
				continue
			}
			m := math.Inf(-1)
			for _, v := range row {
				m = math.Max(m, float64(v))
			}
			var sum float64
			for t, v := range row {
				e := math.Exp(float64(v) - m)
				out[t] = T(e)
				sum += e
			}
			for t := range out {
				out[t] = T(float64(out[t]) / sum)
			}
		}
	}
}

// softmaxGradKernel: in = (p, g); dx = p ∘ (g − Σ g∘p) per row (masked
// positions have p = 0 and so get 0).
func softmaxGradKernel[T gorgop.Float](l int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		p, g := x[0], x[1]
		for b := 0; b < len(p)/l; b++ {
			var dot float64
			for t := b * l; t < (b+1)*l; t++ {
				dot += float64(p[t]) * float64(g[t])
			}
			for t := b * l; t < (b+1)*l; t++ {
				o[t] = T(float64(p[t]) * (float64(g[t]) - dot))
			}
		}
	}
}

// pool is the weighted sum of each sample's L rows: w [B, L], v [B*L, D]
// -> [B, D], out[b] = Σ_t w[b,t] v[b*L+t].
func pool(w, v *G.Node) (*G.Node, error) {
	o := &op{Name: "pool", Inputs: 2, WRT: []bool{true, true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[1].Dims() != 2 || in[0][0]*in[0][1] != in[1][0] {
				return nil, fmt.Errorf("weights %v and values %v", in[0], in[1])
			}
			return tensor.Shape{in[0][0], in[1][1]}, nil
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			b, l, d := in[0].Shape()[0], in[0].Shape()[1], in[1].Shape()[1]
			return run(tensor.Shape{b, d}, in, poolKernel[float32](l, d), poolKernel[float64](l, d))
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			wShape, vShape := in[0].Shape().Clone(), in[1].Shape().Clone()
			dw := &op{Name: "poolGradW", Inputs: 2, // (v, g) -> dw[b,t] = g[b]·v[bL+t]
				OutShape: func([]tensor.Shape) (tensor.Shape, error) { return wShape, nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					return run(wShape, x, poolGradWKernel[float32](wShape[1], vShape[1]), poolGradWKernel[float64](wShape[1], vShape[1]))
				})}
			dv := &op{Name: "poolGradV", Inputs: 2, // (w, g) -> dv[bL+t] = w[b,t] g[b]
				OutShape: func([]tensor.Shape) (tensor.Shape, error) { return vShape, nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					return run(vShape, x, poolGradVKernel[float32](wShape[1], vShape[1]), poolGradVKernel[float64](wShape[1], vShape[1]))
				})}
			gw, err := apply(dw, in[1], g)
			if err != nil {
				return nil, err
			}
			gv, err := apply(dv, in[0], g)
			return G.Nodes{gw, gv}, err
		},
	}
	return apply(o, w, v)
}

func poolKernel[T gorgop.Float](l, d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		w, v := x[0], x[1]
		for r, wt := range w { // r = b*L+t
			if wt == 0 {
				continue
			}
			b := r / l
			out, row := o[b*d:(b+1)*d], v[r*d:(r+1)*d]
			for k, y := range row {
				out[k] += wt * y
			}
		}
	}
}

func poolGradWKernel[T gorgop.Float](l, d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		v, g := x[0], x[1]
		for r := range o {
			b := r / l
			var s T
			for k, y := range v[r*d : (r+1)*d] {
				s += g[b*d+k] * y
			}
			o[r] = s
		}
	}
}

func poolGradVKernel[T gorgop.Float](l, d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		w, g := x[0], x[1]
		for r, wt := range w {
			b := r / l
			out := o[r*d : (r+1)*d]
			for k := range out {
				out[k] = wt * g[b*d+k]
			}
		}
	}
}

// repeatRows repeats each row of x [B, D] l times: [B*l, D].
func repeatRows(x *G.Node, l int) (*G.Node, error) {
	o := &op{Name: "repeatRows", Inputs: 1, WRT: []bool{true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			return tensor.Shape{in[0][0] * l, in[0][1]}, want2D(in[0], "input")
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			s := in[0].Shape()
			return run(tensor.Shape{s[0] * l, s[1]}, in, repeatKernel[float32](l, s[1]), repeatKernel[float64](l, s[1]))
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			s := in[0].Shape().Clone()
			sum := &op{Name: "repeatRowsGrad", Inputs: 1,
				OutShape: func([]tensor.Shape) (tensor.Shape, error) { return s, nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					return run(s, x, sumRowsKernel[float32](l, s[1]), sumRowsKernel[float64](l, s[1]))
				})}
			d, err := apply(sum, g)
			return G.Nodes{d}, err
		},
	}
	return apply(o, x)
}

func repeatKernel[T gorgop.Float](l, d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for r := 0; r < len(o)/d; r++ {
			b := r / l
			copy(o[r*d:(r+1)*d], x[0][b*d:(b+1)*d])
		}
	}
}

func sumRowsKernel[T gorgop.Float](l, d int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for r := 0; r < len(x[0])/d; r++ {
			b := r / l
			out := o[b*d : (b+1)*d]
			for k, v := range x[0][r*d : (r+1)*d] {
				out[k] += v
			}
		}
	}
}

// fm is the factorization machine's pairwise term of f fields of size d
// packed in each row of x [B, f*d]: 0.5 Σ_k [(Σ_i x_ik)² − Σ_i x_ik²],
// out [B, 1].
func fm(x *G.Node, f int) (*G.Node, error) {
	o := &op{Name: "fm", Inputs: 1, WRT: []bool{true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			if in[0].Dims() != 2 || in[0][1]%f != 0 {
				return nil, fmt.Errorf("input %v is not %d fields", in[0], f)
			}
			return tensor.Shape{in[0][0], 1}, nil
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			s := in[0].Shape()
			return run(tensor.Shape{s[0], 1}, in, fmKernel[float32](f, s[1]/f, false), fmKernel[float64](f, s[1]/f, false))
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			s := in[0].Shape().Clone()
			grad := &op{Name: "fmGrad", Inputs: 2, // (x, g) -> g_b (Σ_j x_jk − x_ik)
				OutShape: func([]tensor.Shape) (tensor.Shape, error) { return s, nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					return run(s, x, fmKernel[float32](f, s[1]/f, true), fmKernel[float64](f, s[1]/f, true))
				})}
			d, err := apply(grad, in[0], g)
			return G.Nodes{d}, err
		},
	}
	return apply(o, x)
}

func fmKernel[T gorgop.Float](f, d int, grad bool) gorgop.Kernel[T] {
	return func(o []T, in [][]T) {
		x := in[0]
		w := f * d
		sum := make([]float64, d)
		for b := 0; b < len(x)/w; b++ {
			row := x[b*w : (b+1)*w]
			clear(sum)
			var sq float64
			for i, v := range row {
				sum[i%d] += float64(v)
				sq += float64(v) * float64(v)
			}
			if !grad {
				var s float64
				for _, v := range sum {
					s += v * v
				}
				o[b] = T(0.5 * (s - sq))
				continue
			}
			g := float64(in[1][b])
			for i, v := range row {
				o[b*w+i] = T(g * (sum[i%d] - float64(v)))
			}
		}
	}
}

// bceLoss is the weighted mean binary cross-entropy of logits z [B, 1]
// against (*labels)[b] with weights (*weights)[b] (0 for padding rows):
// Σ w (softplus(z) − y z) / Σ w, a scalar.
func bceLoss(z *G.Node, labels, weights *[]float64) (*G.Node, error) {
	o := &op{Name: "bceWithLogits", Inputs: 1, WRT: []bool{true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.ScalarShape(), nil },
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			n := in[0].Shape().TotalSize()
			if len(*labels) != n || len(*weights) != n {
				return nil, fmt.Errorf("%d labels, %d weights for %d logits", len(*labels), len(*weights), n)
			}
			var loss, wsum float64
			switch z := in[0].Data().(type) {
			case []float32:
				for i, v := range z {
					loss += (*weights)[i] * (softplus(float64(v)) - (*labels)[i]*float64(v))
					wsum += (*weights)[i]
				}
			case []float64:
				for i, v := range z {
					loss += (*weights)[i] * (softplus(v) - (*labels)[i]*v)
					wsum += (*weights)[i]
				}
			}
			if wsum > 0 {
				loss /= wsum
			}
			if in[0].Dtype() == tensor.Float32 {
				return tensor.New(tensor.FromScalar(float32(loss))), nil
			}
			return tensor.New(tensor.FromScalar(loss)), nil
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			s := in[0].Shape().Clone()
			grad := &op{Name: "bceWithLogitsGrad", Inputs: 2, // (z, g) -> g w (σ(z) − y) / Σ w
				OutShape: func([]tensor.Shape) (tensor.Shape, error) { return s, nil },
				Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
					return run(s, x, bceGradKernel[float32](*labels, *weights), bceGradKernel[float64](*labels, *weights))
				})}
			d, err := apply(grad, in[0], g)
			return G.Nodes{d}, err
		},
	}
	return apply(o, z)
}

func bceGradKernel[T gorgop.Float](y, w []float64) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		var wsum float64
		for _, v := range w {
			wsum += v
		}
		if wsum == 0 {
			return
		}
		g := float64(x[1][0]) / wsum
		for i, z := range x[0] {
			o[i] = T(g * w[i] * (sigmoid(float64(z)) - y[i]))
		}
	}
}

// softplus is log(1 + e^x), computed stably.
func softplus(x float64) float64 {
	if x > 0 {
		return x + math.Log1p(math.Exp(-x))
	}
	return math.Log1p(math.Exp(x))
}

// sigmoid is 1 / (1 + e^-x), computed stably.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// concatCols joins matrices of equal row counts side by side (Gorgonia's
// Concat goes through a generic iterator that cost a quarter of the
// training time).
func concatCols(parts ...*G.Node) (*G.Node, error) {
	if len(parts) == 1 {
		return parts[0], nil
	}
	widths := make([]int, len(parts))
	wrt := make([]bool, len(parts))
	for i, p := range parts {
		if p.Dims() != 2 || p.Shape()[0] != parts[0].Shape()[0] {
			return nil, fmt.Errorf("baseline: graph: concat: part %d has shape %v, part 0 %v", i, p.Shape(), parts[0].Shape())
		}
		widths[i] = p.Shape()[1]
		wrt[i] = true
	}
	total := 0
	for _, w := range widths {
		total += w
	}
	o := &op{Name: "concatCols", Inputs: len(parts), WRT: wrt,
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in[0][0], total}, nil },
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			rows := in[0].Shape()[0]
			return run(tensor.Shape{rows, total}, in, concatKernel[float32](widths), concatKernel[float64](widths))
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			var out G.Nodes
			off := 0
			for _, w := range widths {
				lo := off
				s := tensor.Shape{in[0].Shape()[0], w}
				slice := &op{Name: fmt.Sprintf("cols[%d:%d]", lo, lo+w), Inputs: 1,
					OutShape: func([]tensor.Shape) (tensor.Shape, error) { return s, nil },
					Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
						return run(s, x, colsKernel[float32](lo, w, total), colsKernel[float64](lo, w, total))
					})}
				d, err := apply(slice, g)
				if err != nil {
					return nil, err
				}
				out = append(out, d)
				off += w
			}
			return out, nil
		},
	}
	return apply(o, parts...)
}

func concatKernel[T gorgop.Float](widths []int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		total := len(o) / (len(x[0]) / widths[0])
		off := 0
		for i, w := range widths {
			for r := 0; r < len(x[i])/w; r++ {
				copy(o[r*total+off:r*total+off+w], x[i][r*w:(r+1)*w])
			}
			off += w
		}
	}
}

func colsKernel[T gorgop.Float](lo, w, total int) gorgop.Kernel[T] {
	return func(o []T, x [][]T) {
		for r := 0; r < len(o)/w; r++ {
			copy(o[r*w:(r+1)*w], x[0][r*total+lo:r*total+lo+w])
		}
	}
}
