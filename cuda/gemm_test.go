package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

// rowMajorRef is the product C [m, n] = alpha op(A) op(B) + beta C written
// directly in row-major indices (A stored [m, k] or, transposed, [k, m]; B
// [k, n] or [n, k]): the definition RowMajorGemm must reproduce.
func rowMajorRef(transA, transB bool, m, n, k int, alpha float32, a, b []float32, beta float32, c []float32) []float32 {
	out := append([]float32(nil), c...)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for l := 0; l < k; l++ {
				av, bv := a[i*k+l], b[l*n+j]
				if transA {
					av = a[l*m+i]
				}
				if transB {
					bv = b[j*k+l]
				}
				s += float64(av) * float64(bv)
			}
			s *= float64(alpha)
			if beta != 0 {
				s += float64(beta) * float64(c[i*n+j])
			}
			out[i*n+j] = float32(s)
		}
	}
	return out
}

func randSlice(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// TestEvalGemmColumnMajor checks the host evaluator of cuBLAS calls on
// products worked out by hand, with padded leading dimensions, so that the
// mapping tests below do not rest on an evaluator that shares their
// mistake.
func TestEvalGemmColumnMajor(t *testing.T) {
	// A is 2 x 3 column-major with lda 3 (one padding row, NaN: never read):
	// [1 2 3; 4 5 6]. B is 3 x 2 with ldb 3: [1 0; 0 1; 1 1].
	nan := float32(math.NaN())
	a := []float32{1, 4, nan, 2, 5, nan, 3, 6, nan}
	b := []float32{1, 0, 1, 0, 1, 1}
	c := []float32{nan, nan, -7, nan, nan} // 2 x 2, ldc 3 (the -7 pads); beta 0: C is not read
	g := GemmCall{M: 2, N: 2, K: 3, Alpha: 1, LDA: 3, LDB: 3, LDC: 3}
	if err := EvalGemm(g, a, b, c); err != nil {
		t.Fatal(err)
	}
	// A·B = [1+3 2+3; 4+6 5+6] = [4 5; 10 11], column-major with ldc 3.
	if want := []float32{4, 10, -7, 5, 11}; fmt.Sprint(c) != fmt.Sprint(want) {
		t.Errorf("A·B = %v, want %v", c, want)
	}
	// Aᵀ (3 x 2) from the same storage times D (2 x 1) = [1; -1], alpha 2, beta 1 onto [1; 1; 1].
	g = GemmCall{TransA: true, M: 3, N: 1, K: 2, Alpha: 2, Beta: 1, LDA: 3, LDB: 2, LDC: 3}
	c = []float32{1, 1, 1}
	if err := EvalGemm(g, a, []float32{1, -1}, c); err != nil {
		t.Fatal(err)
	}
	// Aᵀ D = [1-4; 2-5; 3-6] = [-3; -3; -3]; 2·that + 1 = -5.
	if want := []float32{-5, -5, -5}; fmt.Sprint(c) != fmt.Sprint(want) {
		t.Errorf("2 Aᵀ D + C = %v, want %v", c, want)
	}
}

// TestGemmCallValidate checks that a call cuBLAS would refuse
// (CUBLAS_STATUS_INVALID_VALUE) is refused, naming the argument, and that
// an operand shorter than the call reads is caught.
func TestGemmCallValidate(t *testing.T) {
	ok := RowMajorGemm(false, false, 3, 5, 7, 1, 0) // cuBLAS: m 5, n 3, k 7, lda 5, ldb 7, ldc 5
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    func(*GemmCall)
		want string
	}{
		{"lda below rows of A", func(g *GemmCall) { g.LDA = 4 }, "lda=4 < 5"},
		{"ldb below rows of B", func(g *GemmCall) { g.LDB = 6 }, "ldb=6 < 7"},
		{"ldc below m", func(g *GemmCall) { g.LDC = 3 }, "ldc=3 < 5"},
		{"lda of a transposed A below k", func(g *GemmCall) { g.TransA, g.LDA = true, 6 }, "lda=6 < 7"},
		{"negative k", func(g *GemmCall) { g.K = -1 }, "negative size"},
		{"negative batch", func(g *GemmCall) { g.Batch = -2 }, "batch=-2"},
		{"overlapping batch outputs", func(g *GemmCall) { g.Batch, g.StrideC = 2, 14 }, "overlap"},
	} {
		g := ok
		c.f(&g)
		err := g.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "CUBLAS_STATUS_INVALID_VALUE") {
			t.Errorf("%s: got %v, want CUBLAS_STATUS_INVALID_VALUE naming %q", c.name, err, c.want)
		}
	}
	// A buffer shorter than the operand the call describes.
	r := rand.New(rand.NewPCG(1, 2))
	a, b, c := randSlice(r, 3*7), randSlice(r, 7*5), make([]float32, 3*5)
	if err := EvalRowMajor(ok, a[:20], b, c); err == nil || !strings.Contains(err.Error(), "operand B") {
		t.Errorf("short left operand: got %v, want an error naming cuBLAS operand B", err)
	}
}

// TestRowMajorGemm checks the argument mapping the device passes to
// cublasGemmEx against the row-major product, for every transposition,
// shapes that are not square (so a leading dimension or a size in the
// wrong place shows), alpha and beta not 1 and 0.
func TestRowMajorGemm(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {7, 2, 4}, {4, 9, 1}, {1, 6, 3}, {16, 16, 16}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			a, b, c := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m*n)
			for _, ab := range [][2]float32{{1, 0}, {0.7, -0.3}} {
				g := RowMajorGemm(tr[0], tr[1], m, n, k, ab[0], ab[1])
				got := append([]float32(nil), c...)
				if err := EvalRowMajor(g, a, b, got); err != nil {
					t.Fatalf("m=%d n=%d k=%d trans=%v: %v", m, n, k, tr, err)
				}
				want := rowMajorRef(tr[0], tr[1], m, n, k, ab[0], a, b, ab[1], c)
				if e := RelErr(got, want); !(e <= 1e-7) {
					t.Errorf("%v for row-major m=%d n=%d k=%d trans=%v: relative error %.3g", g, m, n, k, tr, e)
				}
			}
		}
	}
	// The forward engine's projection y = x wᵀ (w stored [out, in]).
	x, w := randSlice(r, 5*12), randSlice(r, 9*12)
	y := make([]float32, 5*9)
	if err := EvalRowMajor(LinearGemm(5, 12, 9, 0), x, w, y); err != nil {
		t.Fatal(err)
	}
	if e := RelErr(y, linearRef(x, w, 5, 12)); !(e <= 1e-7) {
		t.Errorf("LinearGemm: relative error %.3g against linearRef", e)
	}
}

// TestRowMajorGemmBatched checks the strided batched mapping: three
// products whose operands lie apart by more than their size (the gaps are
// NaN: a read there spreads, a write there shows).
func TestRowMajorGemmBatched(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const batch, m, n, k = 3, 4, 6, 5
	for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
		sa, sb, sc := m*k+3, k*n+1, m*n+5
		a, b, c := make([]float32, batch*sa), make([]float32, batch*sb), make([]float32, batch*sc)
		for _, v := range [][]float32{a, b, c} {
			for i := range v {
				v[i] = float32(math.NaN())
			}
		}
		var want [][]float32
		for i := 0; i < batch; i++ {
			ai, bi, ci := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m*n)
			copy(a[i*sa:], ai)
			copy(b[i*sb:], bi)
			copy(c[i*sc:], ci)
			want = append(want, rowMajorRef(tr[0], tr[1], m, n, k, 1.5, ai, bi, 0.5, ci))
		}
		g := RowMajorGemmBatched(tr[0], tr[1], m, n, k, 1.5, 0.5, int64(sa), int64(sb), int64(sc), batch)
		if err := EvalRowMajor(g, a, b, c); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < batch; i++ {
			if e := RelErr(c[i*sc:i*sc+m*n], want[i]); !(e <= 1e-7) {
				t.Errorf("%v item %d: relative error %.3g", g, i, e)
			}
			for j := i*sc + m*n; j < (i+1)*sc; j++ {
				if !math.IsNaN(float64(c[j])) {
					t.Errorf("%v item %d: wrote %v into the gap at %d", g, i, c[j], j)
				}
			}
		}
	}
	// The device self-test's batch of projections.
	x, w := randSlice(r, batch*7*8), randSlice(r, batch*3*8)
	y := make([]float32, batch*7*3)
	if err := EvalRowMajor(RowMajorGemmBatched(false, true, 7, 3, 8, 1, 0, 7*8, 3*8, 7*3, batch), x, w, y); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < batch; i++ {
		if e := RelErr(y[i*21:(i+1)*21], linearRef(x[i*56:(i+1)*56], w[i*24:(i+1)*24], 7, 8)); !(e <= 1e-7) {
			t.Errorf("batched projection %d: relative error %.3g", i, e)
		}
	}
}

// gemmMutations are mistakes one makes when writing a cuBLAS call for a
// row-major product by hand.
var gemmMutations = []struct {
	name string
	f    func(GemmCall) GemmCall
}{
	{"lda and ldb swapped", func(g GemmCall) GemmCall { g.LDA, g.LDB = g.LDB, g.LDA; return g }},
	{"ldc = m of the row-major product", func(g GemmCall) GemmCall { g.LDC = g.N; return g }},
	{"lda one short", func(g GemmCall) GemmCall { g.LDA--; return g }},
	{"transa flipped", func(g GemmCall) GemmCall { g.TransA = !g.TransA; return g }},
	{"transb flipped", func(g GemmCall) GemmCall { g.TransB = !g.TransB; return g }},
	{"m and n swapped", func(g GemmCall) GemmCall { g.M, g.N = g.N, g.M; return g }},
	{"operands not swapped", func(g GemmCall) GemmCall { g.SwapAB = !g.SwapAB; return g }},
	{"strides of A and B swapped", func(g GemmCall) GemmCall { g.StrideA, g.StrideB = g.StrideB, g.StrideA; return g }},
}

// TestGemmMutationsCaught shows that the evaluator has teeth: each
// mutation of a correct call is refused (cuBLAS's INVALID_VALUE, or an
// operand read beyond its buffer) or gives a wrong product, for every
// transposition.
func TestGemmMutationsCaught(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const batch, m, n, k = 2, 3, 5, 7
	for _, mu := range gemmMutations {
		refused, wrong := 0, 0
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			a, b, c := randSlice(r, batch*m*k), randSlice(r, batch*k*n), randSlice(r, batch*m*n)
			g := RowMajorGemmBatched(tr[0], tr[1], m, n, k, 1, 0, m*k, k*n, m*n, batch)
			var want []float32
			for i := 0; i < batch; i++ {
				want = append(want, rowMajorRef(tr[0], tr[1], m, n, k, 1, a[i*m*k:], b[i*k*n:], 0, c[i*m*n:(i+1)*m*n])...)
			}
			if mu.f(g) == g {
				continue // e.g. lda = ldb = k for x·wᵀ: the same call, not a mistake
			}
			got := append([]float32(nil), c...)
			if err := EvalRowMajor(mu.f(g), a, b, got); err != nil {
				refused++
				continue
			}
			if e := RelErr(got, want); e > 1e-3 || math.IsNaN(e) {
				wrong++
				continue
			}
			t.Errorf("%s with trans=%v: not caught (%v gives the right product)", mu.name, tr, mu.f(g))
		}
		if refused+wrong == 0 {
			t.Errorf("%s: no transposition case changes the call", mu.name)
		}
		t.Logf("%-32s refused %d, wrong product %d", mu.name, refused, wrong)
	}
}

// swapLDBackend is the host backend with one mistake in every GEMM's
// arguments: lda and ldb swapped.
type swapLDBackend struct{ hostBackend }

func (h swapLDBackend) gemm(g GemmCall, left, right, c *hostBuf, ck bufKind) error {
	g.LDA, g.LDB = g.LDB, g.LDA
	return h.hostBackend.gemm(g, left, right, c, ck)
}

// TestStepperCatchesGemmArguments shows that the training step's host
// tests exercise the cuBLAS argument mapping: with lda and ldb swapped in
// every call, LossGrad fails (CUBLAS_STATUS_INVALID_VALUE) instead of
// agreeing with the reference.
func TestStepperCatchesGemmArguments(t *testing.T) {
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	params, batch := stepCase(m.Config, rand.New(rand.NewPCG(9, 10)), true, 0.02)
	s := hostStepper(t, m, F32, params, 2, 0.1, 100, 200)
	if _, _, err := s.lossGrad(batch, 1, func() error { return nil }); err != nil {
		t.Fatalf("with the right arguments: %v", err)
	}
	s.be = swapLDBackend{hostBackend{e: F32}}
	for _, p := range params {
		clear(p.Grad)
	}
	_, _, err = s.lossGrad(batch, 1, func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "CUBLAS_STATUS_INVALID_VALUE") {
		t.Fatalf("lda and ldb swapped: got %v, want CUBLAS_STATUS_INVALID_VALUE", err)
	}
	t.Logf("caught: %v", err)
}
