//go:build rellagpu

package cuda

/*
#include "shim.h"
*/
import "C"

import "fmt"

// blasStatusNames names cuBLAS statuses (cublasGetStatusString is missing from older cuBLAS).
var blasStatusNames = map[int]string{
	0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
	7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func checkBLAS(call string, s C.cublasStatus_t) error {
	if s == C.CUBLAS_STATUS_SUCCESS {
		return nil
	}
	name, ok := blasStatusNames[int(s)]
	if !ok {
		name = fmt.Sprintf("cublasStatus %d", int(s))
	}
	return &Error{Call: call, Code: int(s), Name: name}
}

// BLAS is a cuBLAS handle bound to the device's stream.
type BLAS struct {
	h       C.cublasHandle_t
	Version int // e.g. 130000 for cuBLAS 13.0, 120205 for 12.2.5
	Path    string
}

// NewBLAS opens cuBLAS and creates a handle on the device's stream (inside Do).
func (d *Device) NewBLAS() (*BLAS, error) {
	if err := openBLAS(); err != nil {
		return nil, err
	}
	b := &BLAS{Path: libs.blasPath}
	if err := checkBLAS("cublasCreate", C.r_cublasCreate(&b.h)); err != nil {
		return nil, err
	}
	var v C.int
	if err := checkBLAS("cublasGetVersion", C.r_cublasGetVersion(b.h, &v)); err != nil {
		C.r_cublasDestroy(b.h)
		return nil, err
	}
	b.Version = int(v)
	if err := checkLibMajor(libCUBLAS, b.Path, b.Version/10000, libs.driverVersion); err != nil {
		C.r_cublasDestroy(b.h)
		return nil, err
	}
	if err := checkBLAS("cublasSetStream", C.r_cublasSetStream(b.h, d.stream)); err != nil {
		C.r_cublasDestroy(b.h)
		return nil, err
	}
	// Default math: tensor cores for half types, no TF32 for float32.
	if err := checkBLAS("cublasSetMathMode", C.r_cublasSetMathMode(b.h, C.CUBLAS_DEFAULT_MATH)); err != nil {
		C.r_cublasDestroy(b.h)
		return nil, err
	}
	return b, nil
}

// Destroy releases the handle (inside Do).
func (b *BLAS) Destroy() error { return checkBLAS("cublasDestroy", C.r_cublasDestroy(b.h)) }

func dataType(e Elem) C.cudaDataType {
	switch e {
	case BF16:
		return C.CUDA_R_16BF
	case F16:
		return C.CUDA_R_16F
	}
	return C.CUDA_R_32F
}

// Mat is a column-major matrix operand of a GEMM: a buffer, its element
// type and its leading dimension.
type Mat struct {
	Buf  Buffer
	Type Elem
	LD   int
}

// GemmEx computes C = alpha op(A) op(B) + beta C in cuBLAS's column-major
// convention (C is m x n, op(A) m x k, op(B) k x n), with float
// accumulation (inside Do).
func (b *BLAS) GemmEx(transA, transB bool, m, n, k int, alpha float32, a, bm Mat, beta float32, c Mat) error {
	al, be := C.float(alpha), C.float(beta)
	return checkBLAS("cublasGemmEx", C.r_cublasGemmEx(b.h, boolInt(transA), boolInt(transB), C.int(m), C.int(n), C.int(k), &al,
		a.Buf.ptr, dataType(a.Type), C.int(a.LD),
		bm.Buf.ptr, dataType(bm.Type), C.int(bm.LD), &be,
		c.Buf.ptr, dataType(c.Type), C.int(c.LD)))
}

// GemmStridedBatchedEx runs batch GEMMs like GemmEx, operand i starting
// strideX elements after operand i-1 (inside Do).
func (b *BLAS) GemmStridedBatchedEx(transA, transB bool, m, n, k int, alpha float32, a Mat, strideA int64,
	bm Mat, strideB int64, beta float32, c Mat, strideC int64, batch int) error {
	al, be := C.float(alpha), C.float(beta)
	return checkBLAS("cublasGemmStridedBatchedEx", C.r_cublasGemmStridedBatchedEx(b.h, boolInt(transA), boolInt(transB),
		C.int(m), C.int(n), C.int(k), &al,
		a.Buf.ptr, dataType(a.Type), C.int(a.LD), C.longlong(strideA),
		bm.Buf.ptr, dataType(bm.Type), C.int(bm.LD), C.longlong(strideB), &be,
		c.Buf.ptr, dataType(c.Type), C.int(c.LD), C.longlong(strideC), C.int(batch)))
}

// Run makes the cuBLAS call g (GemmEx, or strided batched when g.Batch is
// set) with the row-major operands left and right that g was mapped from
// (RowMajorGemm, LinearGemm), in cuBLAS's order, and the leading dimensions
// of g; the operands' own LD fields are ignored (inside Do). The host
// backend of the tests evaluates the same g with EvalRowMajor.
func (b *BLAS) Run(g GemmCall, left, right, c Mat) error {
	a, bm := left, right
	if g.SwapAB {
		a, bm = right, left
	}
	a.LD, bm.LD, c.LD = g.LDA, g.LDB, g.LDC
	if g.Batch > 0 {
		return b.GemmStridedBatchedEx(g.TransA, g.TransB, g.M, g.N, g.K, g.Alpha, a, g.StrideA, bm, g.StrideB, g.Beta, c, g.StrideC, g.Batch)
	}
	return b.GemmEx(g.TransA, g.TransB, g.M, g.N, g.K, g.Alpha, a, bm, g.Beta, c)
}

// Linear computes the projection y = x wᵀ + beta y in row-major terms:
// x [rows, in], w [out, in] (as HF stores weights), y [rows, out] (inside
// Do); LinearGemm says how that becomes a cuBLAS call.
func (b *BLAS) Linear(y Mat, x Mat, w Mat, rows, in, out int, beta float32) error {
	return b.Run(LinearGemm(rows, in, out, beta), x, w, y)
}

func boolInt(v bool) C.int {
	if v {
		return 1
	}
	return 0
}
