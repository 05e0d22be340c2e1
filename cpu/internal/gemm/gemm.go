// Package gemm gives the CPU engine its general matrix multiply: a CBLAS
// library's cblas_sgemm and cblas_dgemm (OpenBLAS from Debian's
// libopenblas0 packages, for example) when one can be loaded at run time,
// gonum's pure-Go BLAS otherwise.
//
// The library is opened with dlopen through github.com/ebitengine/purego,
// so the build needs no C toolchain and a machine without the library runs
// the gonum path. Which implementation is used follows a spec string, the
// value of RELLA_BLAS for the engine:
//
//	"" or "auto"  the first optimised CBLAS among Debian's names
//	              (AutoCandidates), else gonum
//	"none"        gonum
//	/abs/libx.so  that library; an error when it cannot be loaded
//
// Every Open loads the library again: dlopen counts references, so all
// engines of a process share one copy, which stays loaded (there is no
// package-level state here). Loading OpenBLAS also sets its thread count
// to GOMAXPROCS unless OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or
// OMP_NUM_THREADS is set; the count is a property of the loaded library,
// so the last Open sets it for the process.
package gemm

import (
	"fmt"
	"path/filepath"
	"strings"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Env is the environment variable the engine reads the spec from.
const Env = "RELLA_BLAS"

// GEMM multiplies row-major matrices: c = alpha·op(a)·op(b) + beta·c with
// op(a) [m, k], op(b) [k, n] and c [m, n], as gonum's blas.Float32Level3
// and blas.Float64Level3 Sgemm and Dgemm define them. With beta = 0, c is
// written without being read (its old contents may be anything).
type GEMM interface {
	Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int)
	// OwnThreads reports whether a call runs on a thread pool of the
	// implementation's own (OpenBLAS with more than one thread). Calls from
	// several goroutines at once then contend for those threads, so callers
	// that parallelise work around their GEMMs should call it from one
	// goroutine at a time instead. Gonum's parallelism is goroutines, which
	// nest without contention.
	OwnThreads() bool
	// String names the implementation for logs: "gonum", or the library
	// (its file) and, for OpenBLAS, its configuration and thread count.
	String() string
}

// Gonum is the pure-Go GEMM.
type Gonum struct{ gonum.Implementation }

// OwnThreads is false: gonum runs on goroutines.
func (Gonum) OwnThreads() bool { return false }

// String returns "gonum".
func (Gonum) String() string { return "gonum" }

// AutoCandidates returns the libraries "auto" tries, in order: OpenBLAS
// (Debian's libopenblas0-pthread, libopenblas0-openmp or libopenblas0-serial
// all provide libopenblas.so.0), then the generic CBLAS and BLAS names,
// which Debian's alternatives may point at OpenBLAS, BLIS, ATLAS or the
// reference BLAS. A library that does not identify itself as an optimised
// one (the reference BLAS is slower than gonum) is skipped.
func AutoCandidates() []string {
	return []string{"libopenblas.so.0", "libopenblas.so", "libcblas.so.3", "libblas.so.3"}
}

// Open returns the GEMM that spec selects (see the package comment). With
// "auto" and no usable library it returns Gonum and, in tried, why each
// candidate was passed over; an explicit path that fails is an error that
// names the path and the cause (a missing file or symbol).
func Open(spec string) (g GEMM, tried []string, err error) {
	switch s := strings.TrimSpace(spec); {
	case s == "" || s == "auto":
		g, tried := openFirst(AutoCandidates())
		return g, tried, nil
	case s == "none" || s == "gonum":
		return Gonum{}, nil, nil
	case filepath.IsAbs(s):
		c, err := openCBLAS(s, false)
		if err != nil {
			return nil, nil, fmt.Errorf("%s=%s: %w", Env, s, err)
		}
		return c, nil, nil
	default:
		return nil, nil, fmt.Errorf("%s=%q: want auto, none or the absolute path of a library with cblas_sgemm and cblas_dgemm", Env, spec)
	}
}

// openFirst returns the first of names that loads as an optimised CBLAS
// library, else Gonum; tried says why each name before it was passed over.
func openFirst(names []string) (GEMM, []string) {
	var tried []string
	for _, name := range names {
		c, err := openCBLAS(name, true)
		if err == nil {
			return c, tried
		}
		tried = append(tried, err.Error())
	}
	return Gonum{}, tried
}

// checkArgs panics, as gonum does, when a GEMM's sizes or slices are
// inconsistent: a C library would read or write out of bounds instead.
func checkArgs(tA, tB blas.Transpose, m, n, k, lenA, lda, lenB, ldb, lenC, ldc int) {
	const maxInt32 = 1<<31 - 1
	if m < 0 || n < 0 || k < 0 || m > maxInt32 || n > maxInt32 || k > maxInt32 || lda > maxInt32 || ldb > maxInt32 || ldc > maxInt32 {
		panic(fmt.Sprintf("gemm: sizes m %d, n %d, k %d, lda %d, ldb %d, ldc %d outside a C int", m, n, k, lda, ldb, ldc))
	}
	rowsA, colsA := m, k
	if tA != blas.NoTrans {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if tB != blas.NoTrans {
		rowsB, colsB = n, k
	}
	need := func(name string, rows, cols, ld, have int) {
		if ld < max(1, cols) {
			panic(fmt.Sprintf("gemm: %s is [%d, %d] with leading dimension %d", name, rows, cols, ld))
		}
		if rows > 0 && cols > 0 && have < (rows-1)*ld+cols {
			panic(fmt.Sprintf("gemm: %s is [%d, %d] with leading dimension %d: %d values, want at least %d", name, rows, cols, ld, have, (rows-1)*ld+cols))
		}
	}
	need("a", rowsA, colsA, lda, lenA)
	need("b", rowsB, colsB, ldb, lenB)
	need("c", m, n, ldc, lenC)
}
