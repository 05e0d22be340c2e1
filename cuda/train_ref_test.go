package cuda

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The backward references are checked against central finite differences
// of the forward references in ref.go: for a loss L = Σ dy∘f(x) with a
// random dy, dL/dx_i ≈ (L(x + h e_i) − L(x − h e_i)) / (2h), computed in
// float64 from the float32 outputs. Inputs are multiples of 2⁻¹⁰ and h is
// 2⁻⁷, so x ± h is exact in float32; what remains is the float32 rounding of
// the forward outputs (about 1e-7 relative, divided by 2h) and the O(h²)
// truncation, so the tolerance is 2e-3 relative norm: a wrong term or sign
// is off by O(1).

const fdStep = 1.0 / 128

// gridRand returns n values uniform in [-a, a] rounded to multiples of 2⁻¹⁰.
func gridRand(r *rand.Rand, n int, a float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.Round((r.Float64()*2-1)*a*1024) / 1024)
	}
	return v
}

// dot64 is Σ a∘b in float64.
func dot64(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// numGrad returns the central-difference gradient of loss with respect to x
// (loss reads x, which numGrad perturbs in place and restores).
func numGrad(x []float32, loss func() float64) []float32 {
	g := make([]float32, len(x))
	for i := range x {
		x0 := x[i]
		x[i] = x0 + fdStep
		up := loss()
		x[i] = x0 - fdStep
		down := loss()
		x[i] = x0
		g[i] = float32((up - down) / (2 * fdStep))
	}
	return g
}

func checkGrad(t *testing.T, name string, got, want []float32, tol float64) {
	t.Helper()
	if e := RelErr(got, want); !(e <= tol) {
		t.Errorf("%s: relative error %.3g against finite differences (tolerance %g)", name, e, tol)
	} else {
		t.Logf("%s: relative error %.2e", name, e)
	}
}

func TestRMSNormBwdRef(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n, d, eps := 3, 16, 1e-5
	x, w, dy := gridRand(r, n*d, 2), gridRand(r, d, 1.5), gridRand(r, n*d, 1)
	want := numGrad(x, func() float64 { return dot64(dy, RMSNormRef(x, w, n, d, eps)) })
	checkGrad(t, "dx", RMSNormBwdRef(x, w, dy, n, d, eps), want, 2e-3)
}

func TestRoPEBwdRef(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	heads, hd := 3, 8
	pos := []int{0, 1, 2, 0, 5, 17}
	x, dy := gridRand(r, len(pos)*heads*hd, 1), gridRand(r, len(pos)*heads*hd, 1)
	want := numGrad(x, func() float64 { return dot64(dy, RoPERef(x, pos, heads, hd, 10000)) })
	got := RoPEBwdRef(dy, pos, heads, hd, 10000)
	checkGrad(t, "dx", got, want, 2e-3)
	// RoPE is a rotation: its backward is its inverse.
	back := RoPERef(got, pos, heads, hd, 10000)
	if e := RelErr(back, dy); e > 1e-6 {
		t.Errorf("rope(rope_bwd(dy)) differs from dy by %.3g", e)
	}
}

// attnCase is a small packed batch: two sequences of 3 and 5 tokens,
// 4 query heads over 2 kv heads, head dim 8.
func attnCase(r *rand.Rand) (q, k, v, dout []float32, cu []int, H, KV, hd int) {
	cu = Offsets([]int{3, 5})
	H, KV, hd = 4, 2, 8
	n := cu[len(cu)-1]
	return gridRand(r, n*H*hd, 1), gridRand(r, n*KV*hd, 1), gridRand(r, n*KV*hd, 1), gridRand(r, n*H*hd, 1), cu, H, KV, hd
}

func TestAttentionBwdRef(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	q, k, v, dout, cu, H, KV, hd := attnCase(r)
	loss := func() float64 { return dot64(dout, AttentionRef(q, k, v, cu, H, KV, hd)) }
	wq, wk, wv := numGrad(q, loss), numGrad(k, loss), numGrad(v, loss)
	dq, dk, dv := AttentionBwdRef(q, k, v, dout, cu, H, KV, hd)
	checkGrad(t, "dq", dq, wq, 2e-3)
	checkGrad(t, "dk", dk, wk, 2e-3)
	checkGrad(t, "dv", dv, wv, 2e-3)
}

// TestAttentionLSERef checks the saved logsumexp: the output rebuilt from
// p_j = exp(s_j − lse) must be AttentionRef's, and lse must be at least the
// largest score (and at most it plus log of the number of keys).
func TestAttentionLSERef(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	q, k, v, dout, cu, H, KV, hd := attnCase(r)
	o, lse := AttentionLSERef(q, k, v, cu, H, KV, hd)
	if e := RelErr(o, AttentionRef(q, k, v, cu, H, KV, hd)); e != 0 {
		t.Errorf("output differs from AttentionRef by %.3g", e)
	}
	n := cu[len(cu)-1]
	rebuilt := make([]float32, len(o))
	scale := 1 / math.Sqrt(float64(hd))
	for b := 0; b+1 < len(cu); b++ {
		for ti := cu[b]; ti < cu[b+1]; ti++ {
			for h := 0; h < H; h++ {
				kvh := h / (H / KV)
				mx := math.Inf(-1)
				for c := 0; c < hd; c++ {
					var acc float64
					for j := cu[b]; j <= ti; j++ {
						s := dot64(q[(ti*H+h)*hd:(ti*H+h+1)*hd], k[(j*KV+kvh)*hd:(j*KV+kvh+1)*hd]) * scale
						mx = math.Max(mx, s)
						acc += math.Exp(s-float64(lse[ti*H+h])) * float64(v[(j*KV+kvh)*hd+c])
					}
					rebuilt[(ti*H+h)*hd+c] = float32(acc)
				}
				l := float64(lse[ti*H+h])
				if l < mx-1e-6 || l > mx+math.Log(float64(ti-cu[b]+1))+1e-6 {
					t.Errorf("row %d head %d: lse %v outside [max %v, max + log n]", ti, h, l, mx)
				}
			}
		}
	}
	if e := RelErr(rebuilt, o); e > 1e-6 {
		t.Errorf("output rebuilt from lse differs by %.3g", e)
	}
	// dd = rowsum(dout∘o) equals Σ_j p_j dp_j, the term FlashAttention-2 subtracts.
	dd := AttentionBwdPreRef(o, dout, n, H, hd)
	want := make([]float32, len(dd))
	for b := 0; b+1 < len(cu); b++ {
		for ti := cu[b]; ti < cu[b+1]; ti++ {
			for h := 0; h < H; h++ {
				kvh := h / (H / KV)
				p, _ := attnProbs(q, k, cu[b], ti, h, H, KV, hd)
				var s float64
				for j := cu[b]; j <= ti; j++ {
					s += p[j-cu[b]] * dot64(dout[(ti*H+h)*hd:(ti*H+h+1)*hd], v[(j*KV+kvh)*hd:(j*KV+kvh+1)*hd])
				}
				want[ti*H+h] = float32(s)
			}
		}
	}
	if e := RelErr(dd, want); e > 1e-6 {
		t.Errorf("attention_bwd_pre: relative error %.3g against Σ p dp", e)
	}
}

func TestSwiGLUBwdRef(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	g, u, dy := gridRand(r, 40, 4), gridRand(r, 40, 2), gridRand(r, 40, 1)
	loss := func() float64 { return dot64(dy, SwiGLURef(g, u)) }
	wg, wu := numGrad(g, loss), numGrad(u, loss)
	dg, du := SwiGLUBwdRef(g, u, dy)
	checkGrad(t, "dg", dg, wg, 2e-3)
	checkGrad(t, "du", du, wu, 2e-3)
}

func TestLoRABwdRef(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	n, in, rank, out, scale := 5, 12, 3, 7, 2.0
	x, a, b, dy := gridRand(r, n*in, 1), gridRand(r, rank*in, 0.5), gridRand(r, out*rank, 0.5), gridRand(r, n*out, 1)
	for _, p := range []float64{0, 0.25} {
		var mask []float32
		if p > 0 {
			mask = make([]float32, n*in)
			for i := range mask {
				if r.Float64() >= p {
					mask[i] = float32(1 / (1 - p))
				}
			}
		}
		loss := func() float64 { return dot64(dy, LoRAFwdRef(x, a, b, mask, n, in, rank, out, scale)) }
		wa, wb, wx := numGrad(a, loss), numGrad(b, loss), numGrad(x, loss)
		da, db, dx := LoRABwdRef(x, a, b, mask, dy, n, in, rank, out, scale)
		checkGrad(t, "dA", da, wa, 2e-3)
		checkGrad(t, "dB", db, wb, 2e-3)
		checkGrad(t, "dx", dx, wx, 2e-3)
	}
}

func TestCrossEntropyRef(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	R, d, V, scale := 3, 8, 37, 0.5
	h, w := gridRand(r, R*d, 1), gridRand(r, V*d, 1)
	labels := []int{0, 36, 17}
	loss, dh := CrossEntropyRef(h, w, labels, d, scale)
	// The loss against a direct computation: −log softmax(z)[label].
	for i, lab := range labels {
		z := make([]float64, V)
		var s float64
		for o := range z {
			z[o] = dot64(h[i*d:(i+1)*d], w[o*d:(o+1)*d])
			s += math.Exp(z[o])
		}
		if want := -math.Log(math.Exp(z[lab]) / s); math.Abs(loss[i]-want) > 1e-12*math.Max(1, want) {
			t.Errorf("row %d: loss %v, want %v", i, loss[i], want)
		}
	}
	want := numGrad(h, func() float64 {
		l, _ := CrossEntropyRef(h, w, labels, d, scale)
		var s float64
		for _, x := range l {
			s += x
		}
		return scale * s
	})
	checkGrad(t, "dh", dh, want, 1e-4) // the loss is float64 throughout: only dh's float32 rounding and O(h²) remain
}

// TestCrossEntropyChunked transliterates ce_stats, ce_finish and ce_grad
// over vocabulary chunks (in float32, as the kernels compute) and checks
// the online logsumexp and the summed chunk gradients against
// CrossEntropyRef.
func TestCrossEntropyChunked(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	R, d, V, scale := 4, 8, 50, 1.0
	h, w := gridRand(r, R*d, 3), gridRand(r, V*d, 3)
	labels := []int{3, 49, 0, 21}
	wantLoss, wantDh := CrossEntropyRef(h, w, labels, d, scale)
	for _, vc := range []int{7, 16, 50} {
		m, s, zlab := make([]float32, R), make([]float32, R), make([]float32, R)
		chunk := func(v0, n int) []float32 { // z = h w[v0:v0+n]ᵀ, a GEMM on the device
			return f32s(matmulT(h, w[v0*d:(v0+n)*d], R, d, n))
		}
		for v0 := 0; v0 < V; v0 += vc {
			n := min(vc, V-v0)
			z := chunk(v0, n)
			for row := 0; row < R; row++ { // ce_stats, one block per row
				zr := z[row*n : (row+1)*n]
				mx := float32(math.Inf(-1))
				for _, x := range zr {
					mx = max(mx, x)
				}
				var sum float32
				for _, x := range zr {
					sum += float32(math.Exp(float64(x - mx)))
				}
				m0, s0 := m[row], s[row]
				if v0 == 0 {
					m0, s0 = float32(math.Inf(-1)), 0
				}
				mn := max(m0, mx)
				s[row] = s0*float32(math.Exp(float64(m0-mn))) + sum*float32(math.Exp(float64(mx-mn)))
				m[row] = mn
				if lab := labels[row]; lab >= v0 && lab < v0+n {
					zlab[row] = zr[lab-v0]
				}
			}
		}
		lse, loss := make([]float32, R), make([]float64, R)
		for row := range lse { // ce_finish
			lse[row] = m[row] + float32(math.Log(float64(s[row])))
			loss[row] = float64(lse[row] - zlab[row])
		}
		dh := make([]float64, R*d)
		for v0 := 0; v0 < V; v0 += vc {
			n := min(vc, V-v0)
			dz := CEChunkRef(chunk(v0, n), lse, labels, v0, scale) // ce_grad
			for row := 0; row < R; row++ {                         // dh += dz w[v0:v0+n], a GEMM
				for o := 0; o < n; o++ {
					for c := 0; c < d; c++ {
						dh[row*d+c] += float64(dz[row*n+o]) * float64(w[(v0+o)*d+c])
					}
				}
			}
		}
		for row := range loss {
			if math.Abs(loss[row]-wantLoss[row]) > 1e-5*math.Max(1, wantLoss[row]) {
				t.Errorf("chunk %d row %d: loss %v, want %v", vc, row, loss[row], wantLoss[row])
			}
		}
		if e := RelErr(f32s(dh), wantDh); e > 1e-5 {
			t.Errorf("chunk %d: dh relative error %.3g", vc, e)
		}
	}
}

// TestPCGAdvance checks train.cu's jump-ahead and output (transliterated)
// against Go's own PCG stepped draw by draw.
func TestPCGAdvance(t *testing.T) {
	for _, seed := range [][2]uint64{{0, 1}, {42, 7}, {math.MaxUint64, math.MaxUint64}} {
		g := rand.NewPCG(seed[0], seed[1])
		s := pcgState{seed[0], seed[1]}
		for i := uint64(1); i <= 300; i++ {
			want := g.Uint64()
			if got := s.advance(i).output(); got != want {
				t.Fatalf("seed %v draw %d: jump gives %#x, PCG %#x", seed, i-1, got, want)
			}
		}
	}
	// Far jumps compose: advance(a+b) = advance(a).advance(b).
	s := pcgState{123, 456}
	if a, b := s.advance(1<<40+12345), s.advance(1<<40).advance(12345); a != b {
		t.Errorf("advance does not compose: %v vs %v", a, b)
	}
}

// TestDropoutMaskSim checks the kernel's scheme (threads of dropRun draws
// jumping ahead, integer threshold) against DropoutKeepRef, which steps Go's
// generator and compares Float64() with p.
func TestDropoutMaskSim(t *testing.T) {
	for _, c := range []struct {
		first, n int64
		p        float64
	}{{0, 1000, 0.1}, {37, 333, 0.05}, {64, 64, 0.5}, {1000, 129, 0}, {5, 200, 0.999}} {
		want := DropoutKeepRef(99, 3, c.first, c.n, c.p)
		got := dropoutMaskSim(99, 3, c.first, c.n, DropoutThreshold(c.p))
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("first %d n %d p %v: element %d kept=%d, want %d", c.first, c.n, c.p, i, got[i], want[i])
			}
		}
		kept := 0
		for _, k := range want {
			kept += int(k)
		}
		if c.p == 0 && kept != int(c.n) {
			t.Errorf("p = 0 dropped %d elements", int(c.n)-kept)
		}
	}
}

// TestDropoutThreshold checks u<<11>>11 ≥ thr ⇔ Float64 ≥ p at and around the
// threshold, for probabilities that are not dyadic.
func TestDropoutThreshold(t *testing.T) {
	for _, p := range []float64{0, 0.05, 0.1, 1.0 / 3, 0.5, 0.9} {
		thr := DropoutThreshold(p)
		for _, k := range []int64{thr - 2, thr - 1, thr, thr + 1} {
			if k < 0 || k >= 1<<53 {
				continue
			}
			f := float64(k) / (1 << 53)
			if (k >= thr) != (f >= p) {
				t.Errorf("p %v: draw %d: integer test %v, float test %v", p, k, k >= thr, f >= p)
			}
		}
	}
}

// TestAdamWConsts checks the constants against the formula written out.
func TestAdamWConsts(t *testing.T) {
	lr, b1, b2, wd := 1e-3, 0.9, 0.999, 0.01
	decay, step, bc2 := AdamWConsts(3, lr, b1, b2, wd)
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-15*math.Abs(b) }
	if !near(decay, 1-lr*wd) || !near(step, lr/(1-b1*b1*b1)) || !near(bc2, math.Sqrt(1-b2*b2*b2)) {
		t.Errorf("got decay %v step %v bc2 %v", decay, step, bc2)
	}
}
