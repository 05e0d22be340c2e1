package cuda

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Go transliterations of the attention kernels of kernels/train.cu, in
// float32 and step by step (blocks of attQT warps, tiles of 32 lanes, the
// causal bounds, the loop over the query heads of a kv group), so that their
// bookkeeping is checked against the references without a GPU. A warp's
// lanes become loops; __shfl_sync becomes reading another lane's value.
// Outputs start as NaN: an element a kernel would not write stays NaN and
// fails the comparison.

const simKT = 32 // ATT_KT, and WARP for the dkv kernel's query tiles

func nanSlice(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return v
}

func expf(x float32) float32 { return float32(math.Exp(float64(x))) }

// attentionFwdSim is attention_fwd: llama.cu's online softmax plus the lse.
func attentionFwdSim(q, k, v []float32, cu []int, H, KV, hd int) (o, lse []float32) {
	n := cu[len(cu)-1]
	o, lse = nanSlice(n*H*hd), nanSlice(n*H)
	scale := float32(1 / math.Sqrt(float64(hd)))
	for b := 0; b+1 < len(cu); b++ {
		start, length := cu[b], cu[b+1]-cu[b]
		for h := 0; h < H; h++ {
			kvh := h / (H / KV)
			for t0 := 0; t0 < length; t0 += attQT {
				tend := min(t0+attQT, length)
				for warp := 0; warp < attQT; warp++ {
					t := t0 + warp
					if t >= length {
						continue
					}
					acc := make([]float32, hd)
					m, l := float32(math.Inf(-1)), float32(0)
					for j0 := 0; j0 < tend; j0 += simKT {
						if j0 > t {
							continue
						}
						var s, p [simKT]float32
						mx := m
						for lane := range s {
							j := j0 + lane
							s[lane] = float32(math.Inf(-1))
							if j <= t {
								var dot float32
								for c := 0; c < hd; c++ {
									dot += q[(start+t)*H*hd+h*hd+c] * scale * k[(start+j)*KV*hd+kvh*hd+c]
								}
								s[lane] = dot
							}
							mx = max(mx, s[lane])
						}
						corr := expf(m - mx)
						var sum float32
						for lane := range p {
							if j0+lane <= t {
								p[lane] = expf(s[lane] - mx)
							}
							sum += p[lane]
						}
						l = l*corr + sum
						for c := range acc {
							acc[c] *= corr
						}
						for jj := 0; jj < min(simKT, t-j0+1); jj++ {
							for c := range acc {
								acc[c] += p[jj] * v[(start+j0+jj)*KV*hd+kvh*hd+c]
							}
						}
						m = mx
					}
					for c := range acc {
						o[(start+t)*H*hd+h*hd+c] = acc[c] * (1 / l)
					}
					lse[(start+t)*H+h] = m + float32(math.Log(float64(l)))
				}
			}
		}
	}
	return o, lse
}

// attentionBwdDQSim is attention_bwd_dq.
func attentionBwdDQSim(q, k, v, dout, lse, dd []float32, cu []int, H, KV, hd int) []float32 {
	n := cu[len(cu)-1]
	dq := nanSlice(n * H * hd)
	scale := float32(1 / math.Sqrt(float64(hd)))
	for b := 0; b+1 < len(cu); b++ {
		start, length := cu[b], cu[b+1]-cu[b]
		for h := 0; h < H; h++ {
			kvh := h / (H / KV)
			for t0 := 0; t0 < length; t0 += attQT {
				tend := min(t0+attQT, length)
				for warp := 0; warp < attQT; warp++ {
					t := t0 + warp
					if t >= length {
						continue
					}
					qrow := (start+t)*H*hd + h*hd
					lt, dt := lse[(start+t)*H+h], dd[(start+t)*H+h]
					acc := make([]float32, hd)
					for j0 := 0; j0 < tend; j0 += simKT {
						if j0 > t {
							continue
						}
						var ds [simKT]float32
						for lane := range ds {
							j := j0 + lane
							if j > t {
								continue
							}
							var s, dp float32
							krow := (start+j)*KV*hd + kvh*hd
							for c := 0; c < hd; c++ {
								s += q[qrow+c] * scale * k[krow+c]
								dp += dout[qrow+c] * v[krow+c]
							}
							ds[lane] = expf(s-lt) * (dp - dt)
						}
						for jj := 0; jj < min(simKT, t-j0+1); jj++ {
							for c := range acc {
								acc[c] += ds[jj] * k[(start+j0+jj)*KV*hd+kvh*hd+c]
							}
						}
					}
					for c := range acc {
						dq[qrow+c] = acc[c] * scale
					}
				}
			}
		}
	}
	return dq
}

// attentionBwdDKVSim is attention_bwd_dkv.
func attentionBwdDKVSim(q, k, v, dout, lse, dd []float32, cu []int, H, KV, hd int) (dk, dv []float32) {
	n := cu[len(cu)-1]
	dk, dv = nanSlice(n*KV*hd), nanSlice(n*KV*hd)
	scale := float32(1 / math.Sqrt(float64(hd)))
	group := H / KV
	for b := 0; b+1 < len(cu); b++ {
		start, length := cu[b], cu[b+1]-cu[b]
		for kvh := 0; kvh < KV; kvh++ {
			for j0 := 0; j0 < length; j0 += attQT { // one block
				for warp := 0; warp < attQT; warp++ {
					j := j0 + warp
					if j >= length {
						continue
					}
					krow := (start+j)*KV*hd + kvh*hd
					ak, av := make([]float32, hd), make([]float32, hd)
					for hh := 0; hh < group; hh++ {
						h := kvh*group + hh
						for t0 := j0; t0 < length; t0 += simKT {
							var p, ds [simKT]float32
							for lane := range p {
								t := t0 + lane
								if t < j || t >= length {
									continue
								}
								qrow := (start+t)*H*hd + h*hd
								var s, dp float32
								for c := 0; c < hd; c++ {
									s += q[qrow+c] * scale * k[krow+c]
									dp += dout[qrow+c] * v[krow+c]
								}
								p[lane] = expf(s - lse[(start+t)*H+h])
								ds[lane] = p[lane] * (dp - dd[(start+t)*H+h])
							}
							for tt := 0; tt < simKT; tt++ {
								t := t0 + tt
								if t >= length { // the kernel's staged rows are zero there
									continue
								}
								qrow := (start+t)*H*hd + h*hd
								for c := 0; c < hd; c++ {
									av[c] += p[tt] * dout[qrow+c]
									ak[c] += ds[tt] * q[qrow+c] * scale
								}
							}
						}
					}
					copy(dk[krow:krow+hd], ak)
					copy(dv[krow:krow+hd], av)
				}
			}
		}
	}
	return dk, dv
}

// TestAttentionTrainSim runs the transliterated kernels on packed
// sequences long enough to span several key tiles (and a query block that
// straddles a tile edge), with GQA, against the references at the fp32
// tolerance of the device checks.
func TestAttentionTrainSim(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	cu := Offsets([]int{1, 37, 70, 8})
	n := cu[len(cu)-1]
	for _, c := range []struct{ H, KV, hd int }{{4, 2, 16}, {6, 6, 8}, {8, 1, 4}} {
		rnd := func(m int) []float32 {
			v := make([]float32, m)
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			return v
		}
		q, k, v := rnd(n*c.H*c.hd), rnd(n*c.KV*c.hd), rnd(n*c.KV*c.hd)
		dout := rnd(n * c.H * c.hd)
		o, lse := attentionFwdSim(q, k, v, cu, c.H, c.KV, c.hd)
		wo, wlse := AttentionLSERef(q, k, v, cu, c.H, c.KV, c.hd)
		if err := Compare("o", o, wo, ATolF32, RTolF32); err != nil {
			t.Errorf("%+v attention_fwd: %v", c, err)
		}
		if err := Compare("lse", lse, wlse, ATolF32, RTolF32); err != nil {
			t.Errorf("%+v attention_fwd: %v", c, err)
		}
		dd := AttentionBwdPreRef(o, dout, n, c.H, c.hd)
		dq := attentionBwdDQSim(q, k, v, dout, lse, dd, cu, c.H, c.KV, c.hd)
		dk, dv := attentionBwdDKVSim(q, k, v, dout, lse, dd, cu, c.H, c.KV, c.hd)
		wq, wk, wv := AttentionBwdRef(q, k, v, dout, cu, c.H, c.KV, c.hd)
		for _, x := range []struct {
			name      string
			got, want []float32
		}{{"dq", dq, wq}, {"dk", dk, wk}, {"dv", dv, wv}} {
			if e := RelErr(x.got, x.want); !(e < RTolF32) {
				t.Errorf("%+v %s: relative error %.3g", c, x.name, e)
			} else {
				t.Logf("%+v %s: relative error %.2e", c, x.name, e)
			}
		}
	}
}
