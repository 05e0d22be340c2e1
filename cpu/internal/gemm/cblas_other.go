//go:build !((linux || darwin || freebsd || netbsd) && (amd64 || arm64))

package gemm

import (
	"fmt"
	"runtime"
)

// openCBLAS fails: loading a library at run time is implemented for Linux,
// macOS, FreeBSD and NetBSD on amd64 and arm64 only.
func openCBLAS(name string, _ bool) (GEMM, error) {
	return nil, fmt.Errorf("%s: loading a BLAS library is not supported on %s/%s (gonum is used)", name, runtime.GOOS, runtime.GOARCH)
}
