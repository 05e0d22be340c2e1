package cuda

import "math"

// CPU references of the kernels in kernels/llama.cu: the plain, obvious
// computation in float64, one function per kernel, with the same layouts.
// The tagged tests run each kernel on the device and compare it with these;
// ref_test.go checks these against second implementations and known values.

// EmbedRef returns table[ids[t], :] for each t: [len(ids), d].
func EmbedRef(table []float32, d int, ids []int) []float32 {
	out := make([]float32, len(ids)*d)
	for t, id := range ids {
		copy(out[t*d:(t+1)*d], table[id*d:(id+1)*d])
	}
	return out
}

// RMSNormRef returns x[r,:] / sqrt(mean(x[r,:]^2) + eps) * w for each of the n rows of x [n, d].
func RMSNormRef(x, w []float32, n, d int, eps float64) []float32 {
	out := make([]float32, n*d)
	for r := 0; r < n; r++ {
		row := x[r*d : (r+1)*d]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		for c, v := range row {
			out[r*d+c] = float32(float64(v) * inv * float64(w[c]))
		}
	}
	return out
}

// RoPERef returns x [n, heads*hd] with HF LLaMA rotary embeddings applied
// (rotate-half convention): for each token t, head and i < hd/2, with
// a = pos[t] * theta^(-2i/hd), the pair (x[i], x[i+hd/2]) becomes
// (x[i] cos a - x[i+hd/2] sin a, x[i+hd/2] cos a + x[i] sin a).
func RoPERef(x []float32, pos []int, heads, hd int, theta float64) []float32 {
	return ropeRotate(x, pos, heads, hd, theta, 1)
}

// ropeRotate rotates each (x[i], x[i+hd/2]) pair of every head by sign·a,
// a = pos[t]·theta^(-2i/hd): sign 1 is RoPE, -1 its transpose (the backward).
func ropeRotate(x []float32, pos []int, heads, hd int, theta, sign float64) []float32 {
	out := make([]float32, len(x))
	half := hd / 2
	for t := range pos {
		for h := 0; h < heads; h++ {
			base := (t*heads + h) * hd
			for i := 0; i < half; i++ {
				s, c := math.Sincos(sign * float64(pos[t]) * math.Pow(theta, -float64(2*i)/float64(hd)))
				x1, x2 := float64(x[base+i]), float64(x[base+i+half])
				out[base+i] = float32(x1*c - x2*s)
				out[base+i+half] = float32(x2*c + x1*s)
			}
		}
	}
	return out
}

// AttentionRef returns causal grouped-query attention over packed sequences:
// for sequence b (rows cu[b] .. cu[b+1]-1), query row t and head h,
// out = sum_{j<=t} softmax_j(q_t·k_j / sqrt(hd)) v_j, where k and v come from
// kv head h/(H/KV). q: [N, H*hd]; k, v: [N, KV*hd]; the result is [N, H*hd].
func AttentionRef(q, k, v []float32, cu []int, H, KV, hd int) []float32 {
	n := cu[len(cu)-1]
	out := make([]float32, n*H*hd)
	scale := 1 / math.Sqrt(float64(hd))
	group := H / KV
	for b := 0; b+1 < len(cu); b++ {
		start, end := cu[b], cu[b+1]
		for t := start; t < end; t++ {
			for h := 0; h < H; h++ {
				kvh := h / group
				qt := q[(t*H+h)*hd : (t*H+h+1)*hd]
				scores := make([]float64, t-start+1)
				mx := math.Inf(-1)
				for j := start; j <= t; j++ {
					kj := k[(j*KV+kvh)*hd : (j*KV+kvh+1)*hd]
					var s float64
					for c := range qt {
						s += float64(qt[c]) * float64(kj[c])
					}
					s *= scale
					scores[j-start] = s
					mx = math.Max(mx, s)
				}
				var sum float64
				for i := range scores {
					scores[i] = math.Exp(scores[i] - mx)
					sum += scores[i]
				}
				for c := 0; c < hd; c++ {
					var o float64
					for j := start; j <= t; j++ {
						o += scores[j-start] * float64(v[(j*KV+kvh)*hd+c])
					}
					out[(t*H+h)*hd+c] = float32(o / sum)
				}
			}
		}
	}
	return out
}

// SwiGLURef returns silu(g) * u elementwise, silu(a) = a / (1 + exp(-a)).
func SwiGLURef(g, u []float32) []float32 {
	out := make([]float32, len(g))
	for i := range g {
		a := float64(g[i])
		out[i] = float32(a / (1 + math.Exp(-a)) * float64(u[i]))
	}
	return out
}

// ResidualAddRef returns x + y elementwise.
func ResidualAddRef(x, y []float32) []float32 {
	out := make([]float32, len(x))
	for i := range x {
		out[i] = float32(float64(x[i]) + float64(y[i]))
	}
	return out
}

// GatherLastRef returns the last row of each packed sequence of x [N, d]: [B, d].
func GatherLastRef(x []float32, cu []int, d int) []float32 {
	b := len(cu) - 1
	out := make([]float32, b*d)
	for i := 0; i < b; i++ {
		last := cu[i+1] - 1
		copy(out[i*d:(i+1)*d], x[last*d:(last+1)*d])
	}
	return out
}

// LMHeadRowsRef returns out[b, r] = h[b, :] · w[rows[r], :] for h [B, d] and
// w [V, d]: the logits of the given vocabulary rows only, [B, len(rows)].
func LMHeadRowsRef(h, w []float32, rows []int, d int) []float32 {
	b := len(h) / d
	out := make([]float32, b*len(rows))
	for i := 0; i < b; i++ {
		for r, row := range rows {
			var s float64
			for c := 0; c < d; c++ {
				s += float64(h[i*d+c]) * float64(w[row*d+c])
			}
			out[i*len(rows)+r] = float32(s)
		}
	}
	return out
}

// MeanPoolRef returns the mean over the rows of each packed sequence of h [N, d]: [B, d].
func MeanPoolRef(h []float32, cu []int, d int) []float32 {
	b := len(cu) - 1
	out := make([]float32, b*d)
	for i := 0; i < b; i++ {
		for c := 0; c < d; c++ {
			var s float64
			for t := cu[i]; t < cu[i+1]; t++ {
				s += float64(h[t*d+c])
			}
			out[i*d+c] = float32(s / float64(cu[i+1]-cu[i]))
		}
	}
	return out
}

// Offsets returns the packing offsets of sequences of the given lengths:
// cu[0] = 0, cu[b+1] = cu[b] + lens[b].
func Offsets(lens []int) []int {
	cu := make([]int, len(lens)+1)
	for i, l := range lens {
		cu[i+1] = cu[i] + l
	}
	return cu
}

// Positions returns each packed token's position within its sequence.
func Positions(cu []int) []int {
	pos := make([]int, cu[len(cu)-1])
	for b := 0; b+1 < len(cu); b++ {
		for t := cu[b]; t < cu[b+1]; t++ {
			pos[t] = t - cu[b]
		}
	}
	return pos
}
