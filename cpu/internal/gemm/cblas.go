//go:build (linux || darwin || freebsd || netbsd) && (amd64 || arm64)

package gemm

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/ebitengine/purego"
	"gonum.org/v1/gonum/blas"
)

// CBLAS constants (cblas.h): the enums are C ints.
const (
	cblasRowMajor = 101
	cblasNoTrans  = 111
	cblasTrans    = 112
)

// CBLAS is a loaded CBLAS library's GEMM.
type CBLAS struct {
	name    string // as opened, or the file the loader mapped
	about   string // configuration and threads, for String
	threads int    // the library's thread count, 0 if it does not say
	sgemm   func(order, tA, tB, m, n, k int32, alpha float32, a []float32, lda int32, b []float32, ldb int32, beta float32, c []float32, ldc int32)
	dgemm   func(order, tA, tB, m, n, k int32, alpha float64, a []float64, lda int32, b []float64, ldb int32, beta float64, c []float64, ldc int32)
}

// optimisedMarkers are symbols that only optimised BLAS libraries export
// (OpenBLAS, BLIS, MKL, ATLAS); "auto" skips a library with none of them.
var optimisedMarkers = [...]string{"openblas_get_config", "bli_info_get_version_str", "MKL_Get_Version", "ATL_buildinfo"}

// openCBLAS loads name (a file name for the loader's search, or a path)
// and binds cblas_sgemm and cblas_dgemm. With auto, a library that is not
// an optimised BLAS is refused.
func openCBLAS(name string, auto bool) (*CBLAS, error) {
	h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot be loaded: %w", name, err)
	}
	sym := func(s string) uintptr {
		p, err := purego.Dlsym(h, s)
		if err != nil {
			return 0
		}
		return p
	}
	c := &CBLAS{name: name}
	var missing []string
	for _, f := range []struct {
		sym string
		fn  any
	}{{"cblas_sgemm", &c.sgemm}, {"cblas_dgemm", &c.dgemm}} {
		p := sym(f.sym)
		if p == 0 {
			missing = append(missing, f.sym)
			continue
		}
		purego.RegisterFunc(f.fn, p)
	}
	if len(missing) > 0 {
		// The handle stays open: dlclose of a library whose constructors
		// started threads (OpenBLAS) is not safe everywhere.
		return nil, fmt.Errorf("%s: loaded, but it does not export %s", name, strings.Join(missing, " or "))
	}
	if auto {
		optimised := false
		for _, s := range optimisedMarkers {
			if sym(s) != 0 {
				optimised = true
				break
			}
		}
		if !optimised {
			return nil, fmt.Errorf("%s: exports cblas_sgemm but none of %s, so it is taken for the reference BLAS (slower than gonum); name it in %s to use it anyway", name, strings.Join(optimisedMarkers[:], ", "), Env)
		}
	}
	if p := loadedFile(name); p != "" {
		c.name = p
	}
	var about []string
	if p := sym("openblas_get_config"); p != 0 {
		var config func() string
		purego.RegisterFunc(&config, p)
		about = append(about, strings.TrimSpace(config()))
	}
	if set, get := sym("openblas_set_num_threads"), sym("openblas_get_num_threads"); set != 0 && get != 0 {
		var setThreads func(int32)
		var getThreads func() int32
		purego.RegisterFunc(&setThreads, set)
		purego.RegisterFunc(&getThreads, get)
		how := "from the environment"
		if !threadsFromEnv() {
			setThreads(int32(runtime.GOMAXPROCS(0)))
			how = "GOMAXPROCS"
		}
		c.threads = int(getThreads())
		about = append(about, fmt.Sprintf("%d threads (%s)", c.threads, how))
	}
	c.about = strings.Join(about, ", ")
	return c, nil
}

// threadsFromEnv reports whether the user set OpenBLAS's thread count.
func threadsFromEnv() bool {
	for _, v := range []string{"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	return false
}

// loadedFile returns the file the loader mapped for name (resolving the
// search path and symbolic links) from /proc/self/maps, or "" where that
// cannot be told: it is only for the log.
func loadedFile(name string) string {
	if filepath.IsAbs(name) {
		if p, err := filepath.EvalSymlinks(name); err == nil {
			return p
		}
		return name
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	base, _, _ := strings.Cut(name, ".so")
	found := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") {
			continue
		}
		p := fields[5]
		if b := filepath.Base(p); b == name || strings.HasPrefix(b, base+".so") || strings.HasPrefix(b, base+"-") || strings.HasPrefix(b, base+"p-") {
			found = p
		}
	}
	if sc.Err() != nil {
		return ""
	}
	return found
}

// OwnThreads is true unless the library says it runs one thread (a
// library that does not say is taken to be threaded, as MKL is).
func (c *CBLAS) OwnThreads() bool { return c.threads != 1 }

// String names the library, with OpenBLAS's configuration and threads.
func (c *CBLAS) String() string {
	if c.about == "" {
		return c.name
	}
	return c.name + " (" + c.about + ")"
}

func trans(t blas.Transpose) int32 {
	if t == blas.NoTrans {
		return cblasNoTrans
	}
	return cblasTrans
}

// Sgemm is cblas_sgemm on row-major data.
func (c *CBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cm []float32, ldc int) {
	checkArgs(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(cm), ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scale(m, n, beta, cm, ldc)
		return
	}
	c.sgemm(cblasRowMajor, trans(tA), trans(tB), int32(m), int32(n), int32(k), alpha, a, int32(lda), b, int32(ldb), beta, cm, int32(ldc))
}

// Dgemm is cblas_dgemm on row-major data.
func (c *CBLAS) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, cm []float64, ldc int) {
	checkArgs(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(cm), ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scale(m, n, beta, cm, ldc)
		return
	}
	c.dgemm(cblasRowMajor, trans(tA), trans(tB), int32(m), int32(n), int32(k), alpha, a, int32(lda), b, int32(ldb), beta, cm, int32(ldc))
}

// scale sets c = beta·c (c = 0 when beta is 0, whatever c held).
func scale[T float32 | float64](m, n int, beta T, c []T, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
