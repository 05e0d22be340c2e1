package cuda

import (
	"math"
	"math/bits"
	"math/rand/v2"
)

// CPU references of the training kernels in kernels/train.cu: the plain
// computation in float64 with float32 inputs and outputs, one function per
// kernel (or per composition of kernels and GEMMs), with the same layouts.
// train_ref_test.go checks each against central finite differences of the
// forward references in ref.go (or against a second implementation); the
// tagged tests run the kernels on the device against these.

// RMSNormBwdRef returns dx, the gradient with respect to x [n, d] of
// sum(dy ∘ RMSNormRef(x, w)): with r = 1/sqrt(mean(x²)+eps) and gw = dy∘w,
// dx = r·gw − x·r³·Σ(gw∘x)/d. (The kernel adds dx into its output.)
func RMSNormBwdRef(x, w, dy []float32, n, d int, eps float64) []float32 {
	dx := make([]float32, n*d)
	for r := 0; r < n; r++ {
		xr, gr := x[r*d:(r+1)*d], dy[r*d:(r+1)*d]
		var ss, sd float64
		for c := range xr {
			ss += float64(xr[c]) * float64(xr[c])
			sd += float64(gr[c]) * float64(w[c]) * float64(xr[c])
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		k := inv * inv * inv * sd / float64(d)
		for c := range xr {
			dx[r*d+c] = float32(inv*float64(gr[c])*float64(w[c]) - float64(xr[c])*k)
		}
	}
	return dx
}

// RoPEBwdRef returns the gradient with respect to x of sum(dy ∘ RoPERef(x)):
// each pair rotated by −a, the transpose of RoPE's rotation.
func RoPEBwdRef(dy []float32, pos []int, heads, hd int, theta float64) []float32 {
	return ropeRotate(dy, pos, heads, hd, theta, -1)
}

// attnProbs returns, for packed row t (of the sequence starting at start)
// and query head h, the causal softmax probabilities over keys start..t and
// the logsumexp of the scaled scores.
func attnProbs(q, k []float32, start, t, h, H, KV, hd int) (p []float64, lse float64) {
	kvh := h / (H / KV)
	scale := 1 / math.Sqrt(float64(hd))
	qt := q[(t*H+h)*hd : (t*H+h+1)*hd]
	p = make([]float64, t-start+1)
	mx := math.Inf(-1)
	for j := start; j <= t; j++ {
		kj := k[(j*KV+kvh)*hd : (j*KV+kvh+1)*hd]
		var s float64
		for c := range qt {
			s += float64(qt[c]) * float64(kj[c])
		}
		p[j-start] = s * scale
		mx = math.Max(mx, p[j-start])
	}
	var sum float64
	for i := range p {
		p[i] = math.Exp(p[i] - mx)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p, mx + math.Log(sum)
}

// AttentionLSERef returns AttentionRef's output and, for each row t and
// head h, lse[t*H+h] = log Σ_{j≤t} exp(q_t·k_j/sqrt(hd)) (attention_fwd).
func AttentionLSERef(q, k, v []float32, cu []int, H, KV, hd int) (o, lse []float32) {
	n := cu[len(cu)-1]
	o = AttentionRef(q, k, v, cu, H, KV, hd)
	lse = make([]float32, n*H)
	for b := 0; b+1 < len(cu); b++ {
		for t := cu[b]; t < cu[b+1]; t++ {
			for h := 0; h < H; h++ {
				_, l := attnProbs(q, k, cu[b], t, h, H, KV, hd)
				lse[t*H+h] = float32(l)
			}
		}
	}
	return o, lse
}

// AttentionBwdPreRef returns dd[t*H+h] = Σ_c dout[t,h,c]·o[t,h,c] (attention_bwd_pre).
func AttentionBwdPreRef(o, dout []float32, n, H, hd int) []float32 {
	dd := make([]float32, n*H)
	for i := range dd {
		var s float64
		for c := 0; c < hd; c++ {
			s += float64(o[i*hd+c]) * float64(dout[i*hd+c])
		}
		dd[i] = float32(s)
	}
	return dd
}

// AttentionBwdRef returns the gradients of sum(dout ∘ AttentionRef(q, k, v))
// with respect to q [N, H*hd], k and v [N, KV*hd] (k and v summed over the
// query heads of each group), with the probabilities computed in full:
// dv_j = Σ_t p_tj dout_t, dp_tj = dout_t·v_j, ds_tj = p_tj (dp_tj − Σ_u p_tu dp_tu),
// dq_t = Σ_j ds_tj k_j / sqrt(hd), dk_j = Σ_t ds_tj q_t / sqrt(hd).
func AttentionBwdRef(q, k, v, dout []float32, cu []int, H, KV, hd int) (dq, dk, dv []float32) {
	n := cu[len(cu)-1]
	scale := 1 / math.Sqrt(float64(hd))
	dq64 := make([]float64, n*H*hd)
	dk64 := make([]float64, n*KV*hd)
	dv64 := make([]float64, n*KV*hd)
	for b := 0; b+1 < len(cu); b++ {
		start := cu[b]
		for t := start; t < cu[b+1]; t++ {
			for h := 0; h < H; h++ {
				kvh := h / (H / KV)
				p, _ := attnProbs(q, k, start, t, h, H, KV, hd)
				g := dout[(t*H+h)*hd : (t*H+h+1)*hd]
				dp := make([]float64, len(p))
				var dot float64
				for j := start; j <= t; j++ {
					vj := v[(j*KV+kvh)*hd : (j*KV+kvh+1)*hd]
					for c := range g {
						dp[j-start] += float64(g[c]) * float64(vj[c])
					}
					dot += p[j-start] * dp[j-start]
				}
				for j := start; j <= t; j++ {
					pj := p[j-start]
					ds := pj * (dp[j-start] - dot) * scale
					kr, qr := (j*KV+kvh)*hd, (t*H+h)*hd
					for c := 0; c < hd; c++ {
						dv64[kr+c] += pj * float64(g[c])
						dq64[qr+c] += ds * float64(k[kr+c])
						dk64[kr+c] += ds * float64(q[qr+c])
					}
				}
			}
		}
	}
	return f32s(dq64), f32s(dk64), f32s(dv64)
}

// SwiGLUBwdRef returns the gradients of sum(dy ∘ SwiGLURef(g, u)) with
// respect to g and u: dg = dy·u·σ(g)(1 + g(1−σ(g))), du = dy·g·σ(g).
func SwiGLUBwdRef(g, u, dy []float32) (dg, du []float32) {
	dg, du = make([]float32, len(g)), make([]float32, len(g))
	for i := range g {
		a, b, y := float64(g[i]), float64(u[i]), float64(dy[i])
		sig := 1 / (1 + math.Exp(-a))
		dg[i] = float32(y * b * sig * (1 + a*(1-sig)))
		du[i] = float32(y * a * sig)
	}
	return dg, du
}

// LoRAFwdRef returns the adapter's contribution to a projection's output,
// scale · (mask∘x) Aᵀ Bᵀ, for x [n, in], A [r, in], B [out, r]; mask
// [n, in] holds the inverted-dropout factors (0 or 1/(1−p)), nil for none.
func LoRAFwdRef(x, a, b, mask []float32, n, in, r, out int, scale float64) []float32 {
	xd := maskRef(x, mask)
	u := matmulT(xd, a, n, in, r) // [n, r]
	y := matmulT(u, b, n, r, out) // [n, out]
	for i := range y {
		y[i] *= scale
	}
	return f32s(y)
}

// LoRABwdRef returns the gradients of sum(dy ∘ LoRAFwdRef(x, A, B, mask))
// for dy [n, out]: with xd = mask∘x and u = xd Aᵀ,
// dB = scale · dyᵀ u [out, r], dA = scale · (dy B)ᵀ xd [r, in], and
// dx = mask ∘ (scale · dy B A) [n, in] (the adapter's share of the input's
// gradient; the frozen weight's share is dy W).
func LoRABwdRef(x, a, b, mask, dy []float32, n, in, r, out int, scale float64) (da, db, dx []float32) {
	xd := maskRef(x, mask)
	u := matmulT(xd, a, n, in, r)
	dy64 := make([]float64, len(dy))
	for i, v := range dy {
		dy64[i] = float64(v) * scale
	}
	db64 := make([]float64, out*r)
	du := make([]float64, n*r) // scale · dy B
	for t := 0; t < n; t++ {
		for o := 0; o < out; o++ {
			g := dy64[t*out+o]
			for j := 0; j < r; j++ {
				db64[o*r+j] += g * u[t*r+j]
				du[t*r+j] += g * float64(b[o*r+j])
			}
		}
	}
	da64 := make([]float64, r*in)
	dx64 := make([]float64, n*in)
	for t := 0; t < n; t++ {
		for j := 0; j < r; j++ {
			g := du[t*r+j]
			for c := 0; c < in; c++ {
				da64[j*in+c] += g * xd[t*in+c]
				dx64[t*in+c] += g * float64(a[j*in+c])
			}
		}
	}
	if mask != nil {
		for i := range dx64 {
			dx64[i] *= float64(mask[i])
		}
	}
	return f32s(da64), f32s(db64), f32s(dx64)
}

// maskRef returns x∘mask in float64 (x when mask is nil).
func maskRef(x, mask []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
		if mask != nil {
			out[i] *= float64(mask[i])
		}
	}
	return out
}

// matmulT returns x [n, in] times wᵀ for w [out, in], in float64.
func matmulT[T float32 | float64](x []T, w []float32, n, in, out int) []float64 {
	y := make([]float64, n*out)
	for t := 0; t < n; t++ {
		for o := 0; o < out; o++ {
			var s float64
			for c := 0; c < in; c++ {
				s += float64(x[t*in+c]) * float64(w[o*in+c])
			}
			y[t*out+o] = s
		}
	}
	return y
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// CrossEntropyRef returns, for the R rows of h [R, d] and an LM head w
// [V, d], each row's loss logsumexp(z) − z[label] with z = h wᵀ, and the
// gradient of scale·Σ loss with respect to h: dh = scale·(softmax(z) −
// onehot(label)) w. (On the device: ce_stats over vocabulary chunks,
// ce_finish, ce_grad, and GEMMs.)
func CrossEntropyRef(h, w []float32, labels []int, d int, scale float64) (loss []float64, dh []float32) {
	R, V := len(labels), len(w)/d
	z := matmulT(h, w, R, d, V)
	loss = make([]float64, R)
	dh64 := make([]float64, R*d)
	for r := 0; r < R; r++ {
		zr := z[r*V : (r+1)*V]
		mx := math.Inf(-1)
		for _, x := range zr {
			mx = math.Max(mx, x)
		}
		var s float64
		for _, x := range zr {
			s += math.Exp(x - mx)
		}
		lse := mx + math.Log(s)
		loss[r] = lse - zr[labels[r]]
		for o, x := range zr {
			g := math.Exp(x - lse)
			if o == labels[r] {
				g--
			}
			g *= scale
			for c := 0; c < d; c++ {
				dh64[r*d+c] += g * float64(w[o*d+c])
			}
		}
	}
	return loss, f32s(dh64)
}

// CEChunkRef returns what ce_grad writes for chunk [v0, v0+len(z)/R) of the
// logits z [R, Vc]: scale·(exp(z − lse) − onehot(label)).
func CEChunkRef(z, lse []float32, labels []int, v0 int, scale float64) []float32 {
	R := len(labels)
	vc := len(z) / R
	out := make([]float32, len(z))
	for r := 0; r < R; r++ {
		for c := 0; c < vc; c++ {
			p := math.Exp(float64(z[r*vc+c]) - float64(lse[r]))
			if labels[r] == v0+c {
				p--
			}
			out[r*vc+c] = float32(p * scale)
		}
	}
	return out
}

// ---- dropout masks ----

// DropoutThreshold is the integer form of "keep when Float64() ≥ p" that
// dropout_mask tests: a draw u is kept when its low 53 bits, u<<11>>11, are
// ≥ ceil(p·2⁵³). (Go's Float64 is float64(u<<11>>11)/2⁵³, exactly, and p·2⁵³
// is exact in float64.)
func DropoutThreshold(p float64) int64 { return int64(math.Ceil(math.Ldexp(p, 53))) }

// DropoutKeepRef returns keep flags (1 kept, 0 dropped) for draws first ..
// first+n−1 of Go's rand.NewPCG(seed, stream) with dropout probability p,
// stepping the generator itself (the draws before first are discarded).
// With stream = i+1 and first = (rows before this pass) × in, these are the
// masks of module i that cpu.DropoutMasks makes, flattened.
func DropoutKeepRef(seed, stream uint64, first, n int64, p float64) []byte {
	r := rand.New(rand.NewPCG(seed, stream))
	for i := int64(0); i < first; i++ {
		r.Uint64()
	}
	keep := make([]byte, n)
	for i := range keep {
		if r.Float64() >= p {
			keep[i] = 1
		}
	}
	return keep
}

// pcgState is the 128-bit state of Go's PCG (hi, lo), as dropout_mask keeps it.
type pcgState struct{ hi, lo uint64 }

// The constants of Go's math/rand/v2 PCG: state = state·mul + inc mod 2¹²⁸.
var (
	pcgMul = pcgState{2549297995355413924, 4865540595714422341}
	pcgInc = pcgState{6364136223846793005, 1442695040888963407}
)

func (a pcgState) mul(b pcgState) pcgState {
	hi, lo := bits.Mul64(a.lo, b.lo)
	return pcgState{hi + a.hi*b.lo + a.lo*b.hi, lo}
}

func (a pcgState) add(b pcgState) pcgState {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, _ := bits.Add64(a.hi, b.hi, c)
	return pcgState{hi, lo}
}

// advance transliterates train.cu's pcg_advance: the state k steps on, by
// square-and-multiply of the affine map s → mul·s + inc.
func (s pcgState) advance(k uint64) pcgState {
	am, ap := pcgState{0, 1}, pcgState{}
	cm, cp := pcgMul, pcgInc
	for ; k > 0; k >>= 1 {
		if k&1 == 1 {
			am = am.mul(cm)
			ap = ap.mul(cm).add(cp)
		}
		cp = cm.add(pcgState{0, 1}).mul(cp)
		cm = cm.mul(cm)
	}
	return am.mul(s).add(ap)
}

// output is the DXSM output of train.cu's pcg_output.
func (s pcgState) output() uint64 {
	hi := s.hi
	hi ^= hi >> 32
	hi *= 0xda942042e4dd58b5
	hi ^= hi >> 48
	return hi * (s.lo | 1)
}

// dropoutMaskSim transliterates the dropout_mask kernel (threads of
// dropRun draws, each jumping to its first draw) into Go.
func dropoutMaskSim(seed, stream uint64, first, n int64, thr int64) []byte {
	keep := make([]byte, n)
	for e0 := int64(0); e0 < n; e0 += dropRun {
		s := pcgState{seed, stream}.advance(uint64(first + e0))
		for e := e0; e < min(e0+dropRun, n); e++ {
			s = s.mul(pcgMul).add(pcgInc)
			if s.output()<<11>>11 >= uint64(thr) {
				keep[e] = 1
			}
		}
	}
	return keep
}

// ---- optimiser ----

// AdamWConsts returns the per-step float64 constants the adamw kernel
// takes, computed exactly as trainer.AdamW.Step computes them for step t
// (counted from 1): decay = 1 − lr·wd, step = lr/(1 − β1ᵗ), bc2 = sqrt(1 − β2ᵗ).
func AdamWConsts(t int, lr, beta1, beta2, weightDecay float64) (decay, step, bc2 float64) {
	bc1 := 1 - math.Pow(beta1, float64(t))
	bc2 = math.Sqrt(1 - math.Pow(beta2, float64(t)))
	return 1 - lr*weightDecay, lr / bc1, bc2
}

// AdamWRef updates p, m and v in place from g as the adamw kernel does
// (float64 arithmetic, float32 storage, trainer.AdamW's formula and order).
func AdamWRef(p, m, v, g []float32, beta1, beta2, eps, decay, step, bc2 float64) {
	for j, g32 := range g {
		gg := float64(g32)
		mj := beta1*float64(m[j]) + (1-beta1)*gg
		vj := beta2*float64(v[j]) + (1-beta2)*gg*gg
		m[j], v[j] = float32(mj), float32(vj)
		w := float64(p[j]) * decay
		w -= step * mj / (math.Sqrt(vj)/bc2 + eps)
		p[j] = float32(w)
	}
}

// ScaleRef multiplies g in place by c as scale_f32 does: float32(float64(g)·c).
func ScaleRef(g []float32, c float64) {
	for j, x := range g {
		g[j] = float32(float64(x) * c)
	}
}

// SumSqRef returns Σ g² in float64 (sumsq_partial + sum_partials).
func SumSqRef(g []float32) float64 {
	var s float64
	for _, x := range g {
		s += float64(x) * float64(x)
	}
	return s
}
