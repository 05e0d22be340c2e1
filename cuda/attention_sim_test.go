package cuda

import (
	"math"
	"math/rand/v2"
	"testing"
)

// attentionTiled transliterates the attention kernel of kernels/llama.cu
// into Go, in float32 and step by step (query blocks of attQT warps, key
// tiles of 32 lanes, the per-warp running max, sum and accumulator), so that
// the online-softmax bookkeeping is checked against AttentionRef without a
// GPU. The warp's lanes become loops; warp_max/warp_sum become reductions.
func attentionTiled(q, k, v []float32, cu []int, H, KV, hd int) []float32 {
	const kt = 32
	n := cu[len(cu)-1]
	out := make([]float32, n*H*hd)
	for i := range out {
		out[i] = float32(math.NaN()) // poison: every element must be written
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	for b := 0; b+1 < len(cu); b++ {
		start, length := cu[b], cu[b+1]-cu[b]
		for h := 0; h < H; h++ {
			kvh := h / (H / KV)
			for t0 := 0; t0 < length; t0 += attQT { // one block
				tend := min(t0+attQT, length)
				for warp := 0; warp < attQT; warp++ {
					t := t0 + warp
					if t >= length {
						continue
					}
					qs := make([]float32, hd)
					for c := range qs {
						qs[c] = q[(start+t)*H*hd+h*hd+c] * scale
					}
					acc := make([]float32, hd)
					m, l := float32(math.Inf(-1)), float32(0)
					for j0 := 0; j0 < tend; j0 += kt {
						if j0 > t {
							continue
						}
						var s, p [kt]float32
						tileMax := float32(math.Inf(-1))
						for lane := 0; lane < kt; lane++ {
							j := j0 + lane
							s[lane] = float32(math.Inf(-1))
							if j <= t {
								var dot float32
								for c := 0; c < hd; c++ {
									dot += qs[c] * k[(start+j)*KV*hd+kvh*hd+c]
								}
								s[lane] = dot
							}
							tileMax = max(tileMax, s[lane])
						}
						mnew := max(m, tileMax)
						corr := float32(math.Exp(float64(m - mnew)))
						var sum float32
						for lane := 0; lane < kt; lane++ {
							if j0+lane <= t {
								p[lane] = float32(math.Exp(float64(s[lane] - mnew)))
							}
							sum += p[lane]
						}
						l = l*corr + sum
						nk := min(kt, t-j0+1)
						for c := range acc {
							acc[c] *= corr
						}
						for jj := 0; jj < nk; jj++ {
							for c := 0; c < hd; c++ {
								acc[c] += p[jj] * v[(start+j0+jj)*KV*hd+kvh*hd+c]
							}
						}
						m = mnew
					}
					for c := 0; c < hd; c++ {
						out[(start+t)*H*hd+h*hd+c] = acc[c] / l
					}
				}
			}
		}
	}
	return out
}

func TestAttentionTiledMatchesRef(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, s := range []struct {
		lens      []int
		H, KV, hd int
	}{{[]int{1, 7, 33, 70}, 4, 2, 16}, {[]int{64, 65}, 2, 1, 8}, {[]int{3}, 3, 3, 6}} {
		cu := Offsets(s.lens)
		n := cu[len(cu)-1]
		// Scaled inputs give peaked softmaxes, where a wrong running max shows.
		q, k, v := randVec(r, n*s.H*s.hd), randVec(r, n*s.KV*s.hd), randVec(r, n*s.KV*s.hd)
		for i := range q {
			q[i] *= 3
		}
		got := attentionTiled(q, k, v, cu, s.H, s.KV, s.hd)
		if err := Compare("attention tiled", got, AttentionRef(q, k, v, cu, s.H, s.KV, s.hd), ATolF32, RTolF32); err != nil {
			t.Errorf("lens %v H %d KV %d hd %d: %v", s.lens, s.H, s.KV, s.hd, err)
		}
	}
}
