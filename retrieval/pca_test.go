package retrieval

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// randomRows returns n rows of length d with column j scaled by (j+1), so the
// covariance has well separated eigenvalues.
func randomRows(rng *rand.Rand, n, d int) [][]float32 {
	x := make([][]float32, n)
	for i := range x {
		x[i] = make([]float32, d)
		for j := range x[i] {
			x[i][j] = float32(rng.NormFloat64()*float64(j+1) + 0.5*float64(j))
		}
	}
	return x
}

// referenceEigen is the covariance (denominator n-1) built with plain loops,
// decomposed by gonum's EigenSym; values and vectors in decreasing order.
func referenceEigen(t *testing.T, x [][]float32) ([]float64, *mat.Dense) {
	t.Helper()
	n, d := len(x), len(x[0])
	mean := make([]float64, d)
	for _, r := range x {
		for j, v := range r {
			mean[j] += float64(v) / float64(n)
		}
	}
	cov := mat.NewSymDense(d, nil)
	for a := 0; a < d; a++ {
		for b := a; b < d; b++ {
			var s float64
			for _, r := range x {
				s += (float64(r[a]) - mean[a]) * (float64(r[b]) - mean[b])
			}
			cov.SetSym(a, b, s/float64(n-1))
		}
	}
	var eig mat.EigenSym
	if !eig.Factorize(cov, true) {
		t.Fatal("reference eigen-decomposition failed")
	}
	vals := eig.Values(nil)
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	rv := make([]float64, d)
	out := mat.NewDense(d, d, nil)
	for c := 0; c < d; c++ {
		rv[c] = vals[d-1-c]
		for r := 0; r < d; r++ {
			out.Set(r, c, vecs.At(r, d-1-c))
		}
	}
	return rv, out
}

func columnVariance(y [][]float32, c int) float64 {
	var m float64
	for _, r := range y {
		m += float64(r[c])
	}
	m /= float64(len(y))
	var s float64
	for _, r := range y {
		s += (float64(r[c]) - m) * (float64(r[c]) - m)
	}
	return s / float64(len(y)-1)
}

func TestPCAMatchesEigenDecomposition(t *testing.T) {
	cases := []struct {
		name    string
		n, d    int
		dim     int
		wantDim int
	}{
		{"more rows than dims", 40, 12, 5, 5},
		{"more dims than rows", 9, 25, 20, 8}, // capped at rank n-1
		{"dim above D", 30, 6, 50, 6},
	}
	for _, tc := range cases {
		for _, gram := range []int{methodCovariance, methodGram} {
			rng := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.d)))
			x := randomRows(rng, tc.n, tc.d)
			fit, err := fitPCA(x, tc.n, tc.d, tc.dim, gram)
			if err != nil {
				t.Fatalf("%s method=%d: %v", tc.name, gram, err)
			}
			if fit.Dim() != tc.wantDim {
				t.Fatalf("%s method=%d: dim %d, want %d", tc.name, gram, fit.Dim(), tc.wantDim)
			}
			vals, vecs := referenceEigen(t, x)
			y, err := fit.Transform(x)
			if err != nil {
				t.Fatal(err)
			}
			for c := 0; c < fit.Dim(); c++ {
				if !relClose(fit.Variances[c], vals[c], 1e-9) {
					t.Errorf("%s method=%d: variance %d = %g, eigenvalue %g", tc.name, gram, c, fit.Variances[c], vals[c])
				}
				// float32 scores: relative tolerance of float32 rounding.
				if v := columnVariance(y, c); !relClose(v, vals[c], 1e-5) {
					t.Errorf("%s method=%d: projected variance %d = %g, eigenvalue %g", tc.name, gram, c, v, vals[c])
				}
				// Components equal the reference eigenvectors up to sign, and
				// the sign puts the largest-magnitude entry positive.
				var dot, big float64
				for r := 0; r < tc.d; r++ {
					dot += fit.Components.At(r, c) * vecs.At(r, c)
					if a := fit.Components.At(r, c); math.Abs(a) > math.Abs(big) {
						big = a
					}
				}
				if math.Abs(math.Abs(dot)-1) > 1e-8 {
					t.Errorf("%s method=%d: component %d differs from the eigenvector: |<v,e>| = %g", tc.name, gram, c, math.Abs(dot))
				}
				if big <= 0 {
					t.Errorf("%s method=%d: component %d has largest entry %g, want positive", tc.name, gram, c, big)
				}
			}
		}
	}
}

func TestPCAPathsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := randomRows(rng, 20, 20)
	a, err := fitPCA(x, 20, 20, 10, methodCovariance)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fitPCA(x, 20, 20, 10, methodGram)
	if err != nil {
		t.Fatal(err)
	}
	if !mat.EqualApprox(a.Components, b.Components, 1e-8) {
		t.Fatal("covariance and Gram paths give different components")
	}
}

func TestPCAUnitRowsAndDuplicates(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := randomRows(rng, 30, 16)
	x[5] = append([]float32(nil), x[3]...) // duplicate items must map to the same vector
	y, err := PCA(x, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(y) != 30 || len(y[0]) != 8 {
		t.Fatalf("shape %dx%d, want 30x8", len(y), len(y[0]))
	}
	for i, r := range y {
		var s float64
		for _, v := range r {
			s += float64(v) * float64(v)
		}
		if math.Abs(s-1) > 1e-5 {
			t.Errorf("row %d has squared norm %g", i, s)
		}
	}
	for j := range y[3] {
		if y[3][j] != y[5][j] {
			t.Fatalf("duplicate rows project differently at %d: %v vs %v", j, y[3][j], y[5][j])
		}
	}
}

func TestPCARejectsBadInput(t *testing.T) {
	if _, err := PCA([][]float32{{1, 2}}, 2); err == nil {
		t.Error("one row: want error")
	}
	if _, err := PCA([][]float32{{1, 2}, {1}}, 2); err == nil {
		t.Error("ragged rows: want error")
	}
	if _, err := PCA([][]float32{{1, 2}, {float32(math.NaN()), 1}}, 2); err == nil {
		t.Error("NaN: want error")
	}
	if _, err := PCA([][]float32{{1, 2}, {1, 2}}, 2); err == nil {
		t.Error("no variance: want error")
	}
}

func relClose(a, b, rel float64) bool {
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))+1e-12
}

// spectralRows returns n x d rows with a geometrically decaying spectrum
// (singular values 10 * 0.85^i over r random directions) plus tiny noise.
func spectralRows(rng *rand.Rand, n, d, r int) [][]float32 {
	a := mat.NewDense(n, r, nil)
	b := mat.NewDense(r, d, nil)
	for i := 0; i < n; i++ {
		for j := 0; j < r; j++ {
			a.Set(i, j, rng.NormFloat64()*10*math.Pow(0.85, float64(j)))
		}
	}
	for i := 0; i < r; i++ {
		for j := 0; j < d; j++ {
			b.Set(i, j, rng.NormFloat64())
		}
	}
	var p mat.Dense
	p.Mul(a, b)
	x := make([][]float32, n)
	for i := range x {
		x[i] = make([]float32, d)
		for j := range x[i] {
			x[i][j] = float32(p.At(i, j) + 1e-3*rng.NormFloat64() + 3)
		}
	}
	return x
}

func TestRandomizedPCAMatchesExact(t *testing.T) {
	for _, tc := range []struct{ n, d, dim int }{
		{300, 200, 20},
		{150, 400, 20},
		{1100, 50, 10}, // more rows than one chunk
	} {
		rng := rand.New(rand.NewPCG(uint64(tc.n), 99))
		x := spectralRows(rng, tc.n, tc.d, 60)
		exact := methodCovariance
		if tc.n <= tc.d {
			exact = methodGram
		}
		want, err := fitPCA(x, tc.n, tc.d, tc.dim, exact)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fitPCA(x, tc.n, tc.d, tc.dim, methodRandomized)
		if err != nil {
			t.Fatal(err)
		}
		if got.Dim() != want.Dim() {
			t.Fatalf("%v: dim %d, want %d", tc, got.Dim(), want.Dim())
		}
		for c := 0; c < got.Dim(); c++ {
			if !relClose(got.Variances[c], want.Variances[c], 1e-9) {
				t.Errorf("%v: variance %d = %.12g, exact %.12g", tc, c, got.Variances[c], want.Variances[c])
			}
			var dot float64
			for r := 0; r < tc.d; r++ {
				dot += got.Components.At(r, c) * want.Components.At(r, c)
			}
			// Same deterministic sign, so the components agree outright.
			if dot < 1-1e-8 {
				t.Errorf("%v: component %d: <randomized, exact> = %.12g", tc, c, dot)
			}
		}
	}
}

func TestFitPCAChoosesSolver(t *testing.T) {
	if useRandomized(500, 4096, 512) || useRandomized(3706, 4096, 2000) {
		t.Error("small or nearly full problems must be exact")
	}
	if !useRandomized(3706, 4096, 512) || !useRandomized(271375, 4096, 512) {
		t.Error("ML-1M and BookCrossing shapes must be randomized")
	}
}
