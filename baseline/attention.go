package baseline

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/rella-project/rella/internal/gorgop"
)

// selfAttention is single-head causal scaled dot-product attention within
// each sample's sequence: q, k, v [B*L, D] -> [B*L, D], row i of sample b
// attends to its positions j <= i with j < (*lens)[b] (left-aligned
// sequences, padding after). A sample with no behaviour gives zeros.
func selfAttention(q, k, v *G.Node, lens *[]int32, l int) (*G.Node, error) {
	o := &op{Name: "selfAttention", Inputs: 3, WRT: []bool{true, true, true},
		OutShape: func(in []tensor.Shape) (tensor.Shape, error) {
			for i, s := range in {
				if s.Dims() != 2 || !s.Eq(in[0]) || s[0]%l != 0 {
					return nil, fmt.Errorf("input %d has shape %v (q %v, L %d)", i, s, in[0], l)
				}
			}
			return in[0].Clone(), nil
		},
		Forward: forwardDense(func(in []*tensor.Dense) (*tensor.Dense, error) {
			s := in[0].Shape()
			if len(*lens)*l != s[0] {
				return nil, fmt.Errorf("%d lengths for %d rows of L=%d", len(*lens), s[0], l)
			}
			return run(s.Clone(), in, attnKernel[float32](*lens, l, s[1], -1), attnKernel[float64](*lens, l, s[1], -1))
		}),
		Diff: func(in G.Nodes, _, g *G.Node) (G.Nodes, error) {
			s := in[0].Shape().Clone()
			var out G.Nodes
			for which, name := range []string{"selfAttentionGradQ", "selfAttentionGradK", "selfAttentionGradV"} {
				grad := &op{Name: name, Inputs: 4,
					OutShape: func([]tensor.Shape) (tensor.Shape, error) { return s, nil },
					Forward: forwardDense(func(x []*tensor.Dense) (*tensor.Dense, error) {
						return run(s, x, attnKernel[float32](*lens, l, s[1], which), attnKernel[float64](*lens, l, s[1], which))
					})}
				d, err := apply(grad, in[0], in[1], in[2], g)
				if err != nil {
					return nil, err
				}
				out = append(out, d)
			}
			return out, nil
		},
	}
	return apply(o, q, k, v)
}

// attnKernel computes the attention (which = -1; inputs q, k, v) or one of
// its gradients (which = 0, 1, 2 for dq, dk, dv; inputs q, k, v, g): with
// P = softmax(q kᵀ/√D) over the valid keys, dV = Pᵀ g, dP = g vᵀ,
// dS = P ∘ (dP − rowsum(P ∘ dP)), dq = dS k/√D, dk = dSᵀ q/√D.
func attnKernel[T gorgop.Float](lens []int32, l, d, which int) gorgop.Kernel[T] {
	sc := 1 / math.Sqrt(float64(d))
	return func(o []T, x [][]T) {
		parallel(len(lens), func(lo, hi int) {
			p := make([]float64, l)
			dp := make([]float64, l)
			for b := lo; b < hi; b++ {
				n := min(int(lens[b]), l)
				base := b * l * d
				q, k, v := x[0][base:base+l*d], x[1][base:base+l*d], x[2][base:base+l*d]
				out := o[base : base+l*d]
				for i := 0; i < l && n > 0; i++ {
					m := min(i+1, n) // keys 0..m-1
					mx := math.Inf(-1)
					for j := 0; j < m; j++ {
						var s float64
						for c := 0; c < d; c++ {
							s += float64(q[i*d+c]) * float64(k[j*d+c])
						}
						p[j] = s * sc
						mx = math.Max(mx, p[j])
					}
					var sum float64
					for j := 0; j < m; j++ {
						p[j] = math.Exp(p[j] - mx)
						sum += p[j]
					}
					for j := 0; j < m; j++ {
						p[j] /= sum
					}
					if which < 0 {
						for j := 0; j < m; j++ {
							for c := 0; c < d; c++ {
								out[i*d+c] += T(p[j] * float64(v[j*d+c]))
							}
						}
						continue
					}
					g := x[3][base+i*d : base+(i+1)*d]
					if which == 2 {
						for j := 0; j < m; j++ {
							for c := 0; c < d; c++ {
								out[j*d+c] += T(p[j] * float64(g[c]))
							}
						}
						continue
					}
					var dot float64
					for j := 0; j < m; j++ {
						var s float64
						for c := 0; c < d; c++ {
							s += float64(g[c]) * float64(v[j*d+c])
						}
						dp[j] = s
						dot += p[j] * s
					}
					for j := 0; j < m; j++ {
						ds := p[j] * (dp[j] - dot) * sc
						if which == 0 {
							for c := 0; c < d; c++ {
								out[i*d+c] += T(ds * float64(k[j*d+c]))
							}
						} else {
							for c := 0; c < d; c++ {
								out[j*d+c] += T(ds * float64(q[i*d+c]))
							}
						}
					}
				}
			}
		})
	}
}
