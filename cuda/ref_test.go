package cuda

import (
	"math"
	"math/cmplx"
	"math/rand/v2"
	"testing"
)

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func near(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if err := Compare(what, got, want, tol, tol); err != nil {
		t.Error(err)
	}
}

func TestRMSNormRefKnown(t *testing.T) {
	// Row 1: x=(3,4): mean square 12.5, rms 3.5355339059; w=(1,2).
	// Row 2: x=(1,1), eps=1: 1/sqrt(2).
	got := RMSNormRef([]float32{3, 4}, []float32{1, 2}, 1, 2, 0)
	near(t, "rmsnorm", got, []float32{0.848528137423857, 2.262741699796952}, 1e-7)
	got = RMSNormRef([]float32{1, 1}, []float32{1, 2}, 1, 2, 1)
	near(t, "rmsnorm eps", got, []float32{0.7071067811865475, 1.414213562373095}, 1e-7)
}

func TestSwiGLURefKnown(t *testing.T) {
	// silu(1) = 0.7310585786300049, silu(-2) = -0.23840584404423515, silu(0) = 0 (Python).
	got := SwiGLURef([]float32{1, -2, 0}, []float32{2, 1, 5})
	near(t, "swiglu", got, []float32{1.4621171572600098, -0.23840584404423515, 0}, 1e-7)
}

// TestRoPERefComplex checks RoPERef against the complex-number form of the
// rotation: the pair (x[i], x[i+hd/2]) is the complex number x[i] + i x[i+hd/2]
// multiplied by exp(i pos theta^(-2i/hd)).
func TestRoPERefComplex(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const heads, hd, theta = 3, 16, 10000.0
	pos := []int{0, 1, 7, 300, 2047}
	x := randVec(r, len(pos)*heads*hd)
	got := RoPERef(x, pos, heads, hd, theta)
	for t0, p := range pos {
		for h := 0; h < heads; h++ {
			for i := 0; i < hd/2; i++ {
				base := (t0*heads + h) * hd
				z := complex(float64(x[base+i]), float64(x[base+i+hd/2]))
				w := z * cmplx.Exp(complex(0, float64(p)/math.Pow(theta, float64(2*i)/hd)))
				if math.Abs(real(w)-float64(got[base+i])) > 1e-5 || math.Abs(imag(w)-float64(got[base+i+hd/2])) > 1e-5 {
					t.Fatalf("pos %d head %d pair %d: got (%g,%g), want (%g,%g)", p, h, i, got[base+i], got[base+i+hd/2], real(w), imag(w))
				}
			}
		}
	}
	near(t, "rope at position 0", got[:heads*hd], x[:heads*hd], 0)
}

// TestRoPERefRelative checks the property RoPE exists for: the dot product of
// a rotated query and key depends only on the distance of their positions.
func TestRoPERefRelative(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const hd = 32
	q, k := randVec(r, hd), randVec(r, hd)
	dot := func(m, n int) float64 {
		a := RoPERef(q, []int{m}, 1, hd, 10000)
		b := RoPERef(k, []int{n}, 1, hd, 10000)
		var s float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	if d1, d2 := dot(5, 2), dot(105, 102); math.Abs(d1-d2) > 1e-4 {
		t.Errorf("q·k at (5,2) = %g but at (105,102) = %g", d1, d2)
	}
}

// attentionPadded is a second implementation of causal GQA: sequences padded
// to a [B, T] batch, keys and values repeated per query head (HF repeat_kv),
// a full score matrix with an additive -Inf mask, softmax row by row.
func attentionPadded(q, k, v []float32, lens []int, H, KV, hd int) []float32 {
	B, T := len(lens), 0
	for _, l := range lens {
		T = max(T, l)
	}
	cu := Offsets(lens)
	n := cu[B]
	out := make([]float32, n*H*hd)
	at := func(buf []float32, heads, b, t, h, c int) float64 {
		if t >= lens[b] {
			return 0 // padding
		}
		return float64(buf[((cu[b]+t)*heads+h)*hd+c])
	}
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			kvh := h * KV / H
			S := make([][]float64, T)
			for i := 0; i < T; i++ {
				S[i] = make([]float64, T)
				for j := 0; j < T; j++ {
					var s float64
					for c := 0; c < hd; c++ {
						s += at(q, H, b, i, h, c) * at(k, KV, b, j, kvh, c)
					}
					mask := 0.0
					if j > i || j >= lens[b] {
						mask = math.Inf(-1)
					}
					S[i][j] = s/math.Sqrt(float64(hd)) + mask
				}
			}
			for i := 0; i < lens[b]; i++ {
				mx := math.Inf(-1)
				for _, s := range S[i] {
					mx = math.Max(mx, s)
				}
				var z float64
				for j := range S[i] {
					S[i][j] = math.Exp(S[i][j] - mx)
					z += S[i][j]
				}
				for c := 0; c < hd; c++ {
					var o float64
					for j := 0; j < T; j++ {
						o += S[i][j] / z * at(v, KV, b, j, kvh, c)
					}
					out[((cu[b]+i)*H+h)*hd+c] = float32(o)
				}
			}
		}
	}
	return out
}

func TestAttentionRefPadded(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	lens := []int{1, 5, 3, 9}
	const H, KV, hd = 4, 2, 8
	n := Offsets(lens)[len(lens)]
	q, k, v := randVec(r, n*H*hd), randVec(r, n*KV*hd), randVec(r, n*KV*hd)
	near(t, "attention", AttentionRef(q, k, v, Offsets(lens), H, KV, hd), attentionPadded(q, k, v, lens, H, KV, hd), 1e-6)
}

func TestAttentionRefKnown(t *testing.T) {
	// One sequence of 3 tokens, H = KV = 1, hd = 2, all keys equal: the
	// weights are uniform over the prefix, so row t is the mean of v[0..t].
	q := []float32{1, 2, -1, 0, 3, 3}
	k := []float32{1, 1, 1, 1, 1, 1}
	v := []float32{2, 4, 4, 0, 0, 8}
	want := []float32{2, 4, 3, 2, 2, 4}
	near(t, "uniform attention", AttentionRef(q, k, v, []int{0, 3}, 1, 1, 2), want, 1e-6)
}

func TestGatherLastMeanPoolRef(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10} // 5 rows of d = 2
	cu := []int{0, 2, 5}
	near(t, "gather_last", GatherLastRef(x, cu, 2), []float32{3, 4, 9, 10}, 0)
	near(t, "mean_pool", MeanPoolRef(x, cu, 2), []float32{2, 3, 7, 8}, 1e-7)
}

func TestLMHeadRowsRef(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const B, V, d = 3, 11, 5
	h, w := randVec(r, B*d), randVec(r, V*d)
	rows := []int{9, 2, 9}
	got := LMHeadRowsRef(h, w, rows, d)
	// Second implementation: all logits as h wᵀ, then pick the columns.
	for b := 0; b < B; b++ {
		for i, row := range rows {
			var s float64
			for c := 0; c < d; c++ {
				s += float64(h[b*d+c]) * float64(w[row*d+c])
			}
			if math.Abs(s-float64(got[b*len(rows)+i])) > 1e-6 {
				t.Errorf("[%d,%d]: got %g, want %g", b, i, got[b*len(rows)+i], s)
			}
		}
	}
}

func TestEmbedResidualRef(t *testing.T) {
	table := []float32{0, 1, 10, 11, 20, 21}
	near(t, "embed", EmbedRef(table, 2, []int{2, 0, 2}), []float32{20, 21, 0, 1, 20, 21}, 0)
	near(t, "residual", ResidualAddRef([]float32{1, 2}, []float32{0.5, -3}), []float32{1.5, -1}, 0)
}

func TestOffsetsPositions(t *testing.T) {
	cu := Offsets([]int{2, 3})
	if cu[0] != 0 || cu[1] != 2 || cu[2] != 5 {
		t.Fatalf("Offsets: got %v, want [0 2 5]", cu)
	}
	pos := Positions(cu)
	want := []int{0, 1, 0, 1, 2}
	for i := range want {
		if pos[i] != want[i] {
			t.Fatalf("Positions: got %v, want %v", pos, want)
		}
	}
}
