package gemm

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/gonum/blas"
)

// RequiredEnv makes a missing BLAS library a test failure instead of a skip
// (scripts/test.sh sets it where it installs OpenBLAS).
const RequiredEnv = "RELLA_BLAS_REQUIRED"

// library opens the "auto" library or skips (fails under RELLA_BLAS_REQUIRED=1).
func library(t *testing.T) GEMM {
	t.Helper()
	g, tried, err := Open("auto")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.(Gonum); ok {
		msg := "no optimised CBLAS library found (" + strings.Join(tried, "; ") + "): install Debian's libopenblas0-pthread to test the BLAS path"
		if os.Getenv(RequiredEnv) == "1" {
			t.Fatal(msg + " (" + RequiredEnv + "=1)")
		}
		t.Skip(msg)
	}
	t.Logf("library: %v", g)
	return g
}

// The library's GEMM agrees with gonum's for every transpose, padded
// leading dimensions, beta 0 over garbage (NaN) and beta ≠ 0.
func TestLibraryMatchesGonum(t *testing.T) {
	lib := library(t)
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		return v
	}
	to32 := func(v []float64) []float32 {
		w := make([]float32, len(v))
		for i, x := range v {
			w[i] = float32(x)
		}
		return w
	}
	for _, sz := range [][3]int{{1, 1, 1}, {7, 5, 3}, {64, 130, 33}, {200, 96, 257}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans} {
				for _, beta := range []float64{0, 0.5} {
					ra, ca := m, k
					if tA == blas.Trans {
						ra, ca = k, m
					}
					rb, cb := k, n
					if tB == blas.Trans {
						rb, cb = n, k
					}
					lda, ldb, ldc := ca+3, cb+1, n+2
					a, b, c0 := fill(ra*lda), fill(rb*ldb), fill(m*ldc)
					if beta == 0 {
						for i := range c0 {
							c0[i] = math.NaN()
						}
					}
					want := append([]float64(nil), c0...)
					Gonum{}.Dgemm(tA, tB, m, n, k, 1.5, a, lda, b, ldb, beta, want, ldc)
					got := append([]float64(nil), c0...)
					lib.Dgemm(tA, tB, m, n, k, 1.5, a, lda, b, ldb, beta, got, ldc)
					want32 := to32(c0)
					Gonum{}.Sgemm(tA, tB, m, n, k, 1.5, to32(a), lda, to32(b), ldb, float32(beta), want32, ldc)
					got32 := to32(c0)
					lib.Sgemm(tA, tB, m, n, k, 1.5, to32(a), lda, to32(b), ldb, float32(beta), got32, ldc)
					for i := 0; i < m; i++ {
						for j := 0; j < ldc; j++ {
							p := i*ldc + j
							if j >= n { // padding: untouched
								if !same(got[p], c0[p]) || !same(float64(got32[p]), float64(float32(c0[p]))) {
									t.Fatalf("%v: padding c[%d,%d] changed", sz, i, j)
								}
								continue
							}
							// Different summation orders: float64 within 1e-12
							// of the sum of |terms| (about k·1.5 here), float32
							// within 1e-5 of it (k·2^-24 rounding errors).
							scale := 1.5 * float64(k) * 3
							if d := math.Abs(got[p] - want[p]); !(d <= 1e-12*scale) {
								t.Fatalf("%v tA %v tB %v beta %g: dgemm c[%d,%d] = %g, gonum %g", sz, tA, tB, beta, i, j, got[p], want[p])
							}
							if d := math.Abs(float64(got32[p] - want32[p])); !(d <= 1e-5*scale) {
								t.Fatalf("%v tA %v tB %v beta %g: sgemm c[%d,%d] = %g, gonum %g", sz, tA, tB, beta, i, j, got32[p], want32[p])
							}
						}
					}
				}
			}
		}
	}
}

func same(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

// Wrong sizes panic, as in gonum, rather than reaching the library.
func TestLibraryChecksSizes(t *testing.T) {
	lib := library(t)
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "want at least") {
			t.Errorf("short b: recovered %v, want a panic naming the size", r)
		}
	}()
	a, b, c := make([]float32, 6), make([]float32, 5), make([]float32, 4)
	lib.Sgemm(blas.NoTrans, blas.NoTrans, 2, 2, 3, 1, a, 3, b, 2, 0, c, 2)
}

// "auto" with no loadable library falls back to gonum and says why.
func TestAutoFallsBackToGonum(t *testing.T) {
	g, tried := openFirst([]string{"libnothere-rella.so.9", "libalsonothere-rella.so.1"})
	if _, ok := g.(Gonum); !ok {
		t.Fatalf("got %v, want gonum", g)
	}
	if len(tried) != 2 || !strings.Contains(tried[0], "libnothere-rella.so.9") || !strings.Contains(tried[1], "libalsonothere-rella.so.1") {
		t.Errorf("tried %q, want a reason naming each library", tried)
	}
}

func TestOpenSpecs(t *testing.T) {
	for _, s := range []string{"none", "gonum"} {
		g, _, err := Open(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if g.String() != "gonum" {
			t.Errorf("%s: got %v, want gonum", s, g)
		}
	}
	if _, _, err := Open("libopenblas.so.0"); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("relative name: error %v, want one asking for an absolute path", err)
	}
	missing := filepath.Join(t.TempDir(), "libnothere.so")
	_, _, err := Open(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), Env) {
		t.Errorf("missing file: error %v, want one naming %s and %s", err, Env, missing)
	}
	// A real library without CBLAS: the error names the missing symbol.
	libm := ""
	for _, pat := range []string{"/lib/*/libm.so.6", "/usr/lib/*/libm.so.6", "/lib64/libm.so.6", "/usr/lib64/libm.so.6"} {
		if ms, _ := filepath.Glob(pat); len(ms) > 0 {
			libm = ms[0]
			break
		}
	}
	if libm == "" {
		t.Log("no libm.so.6 found: the missing-symbol case is not checked")
		return
	}
	_, _, err = Open(libm)
	if err == nil || !strings.Contains(err.Error(), libm) || !strings.Contains(err.Error(), "cblas_sgemm") {
		t.Errorf("%s: error %v, want one naming the file and cblas_sgemm", libm, err)
	}
}
