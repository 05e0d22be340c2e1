package cuda

import (
	"fmt"
	"strings"
)

// GemmCall is one cuBLAS GEMM exactly as the device makes it: the
// arguments of cublasGemmEx, or of cublasGemmStridedBatchedEx when Batch is
// set, in cuBLAS's column-major convention (C is M x N with leading
// dimension LDC, op(A) M x K, op(B) K x N). The engine and the trainer
// never write these by hand: they state a row-major product and
// RowMajorGemm (or LinearGemm) maps it, once, for both the device
// (BLAS.Run passes the fields to cuBLAS unchanged) and the host backend of
// the tests (EvalGemm evaluates the same fields with column-major
// semantics), so the tests exercise the mapping itself.
type GemmCall struct {
	TransA, TransB            bool // CUBLAS_OP_T for cuBLAS's A, B
	M, N, K                   int
	Alpha, Beta               float32
	LDA, LDB, LDC             int
	StrideA, StrideB, StrideC int64 // elements between batch items (strided batched only)
	Batch                     int   // 0: cublasGemmEx; >= 1: cublasGemmStridedBatchedEx with this batch count
	// SwapAB says which row-major operand is which cuBLAS operand: when
	// set, cuBLAS's A is the row-major right operand and its B the left one.
	SwapAB bool
}

// String shows the call as cuBLAS sees it.
func (g GemmCall) String() string {
	op := func(t bool) string {
		if t {
			return "T"
		}
		return "N"
	}
	s := fmt.Sprintf("gemm(%s%s m=%d n=%d k=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g",
		op(g.TransA), op(g.TransB), g.M, g.N, g.K, g.LDA, g.LDB, g.LDC, g.Alpha, g.Beta)
	if g.Batch > 0 {
		s += fmt.Sprintf(" strides=%d,%d,%d batch=%d", g.StrideA, g.StrideB, g.StrideC, g.Batch)
	}
	if g.SwapAB {
		s += " swapped"
	}
	return s + ")"
}

// RowMajorGemm maps the row-major product C [m, n] = alpha op(A) op(B) +
// beta C, with A stored [m, k] ([k, m] when transA), B stored [k, n] ([n,
// k] when transB) and C [m, n], all dense, onto cuBLAS's column-major
// GEMM. A row-major matrix read column-major is its transpose, so cuBLAS
// computes Cᵀ (n x m) = op(B)ᵀ op(A)ᵀ: its A is our B (SwapAB), the
// transposition flags follow their operands, and each leading dimension is
// the row length of the stored matrix.
func RowMajorGemm(transA, transB bool, m, n, k int, alpha, beta float32) GemmCall {
	lda, ldb := k, n // row lengths of A and B as stored
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	return GemmCall{TransA: transB, TransB: transA, M: n, N: m, K: k, Alpha: alpha, Beta: beta,
		LDA: ldb, LDB: lda, LDC: n, SwapAB: true}
}

// RowMajorGemmBatched is RowMajorGemm over batch products, operand i of
// each starting strideX elements after operand i-1 (strided batched GEMM).
func RowMajorGemmBatched(transA, transB bool, m, n, k int, alpha, beta float32, strideA, strideB, strideC int64, batch int) GemmCall {
	g := RowMajorGemm(transA, transB, m, n, k, alpha, beta)
	g.StrideA, g.StrideB, g.StrideC, g.Batch = strideB, strideA, strideC, batch
	return g
}

// LinearGemm is the projection y [rows, out] = x [rows, in] wᵀ + beta y
// with w stored [out, in] as HF stores weights: the row-major product
// x · wᵀ (left operand x, right operand w).
func LinearGemm(rows, in, out int, beta float32) GemmCall {
	return RowMajorGemm(false, true, rows, out, in, 1, beta)
}

// opShape is the stored shape (rows x cols, column-major) of a GEMM operand
// that op turns into r x c.
func opShape(trans bool, r, c int) (rows, cols int) {
	if trans {
		return c, r
	}
	return r, c
}

// Validate applies cuBLAS's argument checks (those that make it return
// CUBLAS_STATUS_INVALID_VALUE: negative sizes, a leading dimension below
// the rows of the stored operand, a negative batch count). It also rejects
// strided batches whose outputs overlap, whose result cuBLAS leaves
// undefined.
func (g GemmCall) Validate() error {
	var bad []string
	if g.M < 0 || g.N < 0 || g.K < 0 {
		bad = append(bad, fmt.Sprintf("negative size m=%d n=%d k=%d", g.M, g.N, g.K))
	}
	ar, _ := opShape(g.TransA, g.M, g.K)
	br, _ := opShape(g.TransB, g.K, g.N)
	if g.LDA < max(1, ar) {
		bad = append(bad, fmt.Sprintf("lda=%d < %d (rows of A as stored)", g.LDA, max(1, ar)))
	}
	if g.LDB < max(1, br) {
		bad = append(bad, fmt.Sprintf("ldb=%d < %d (rows of B as stored)", g.LDB, max(1, br)))
	}
	if g.LDC < max(1, g.M) {
		bad = append(bad, fmt.Sprintf("ldc=%d < %d (rows of C)", g.LDC, max(1, g.M)))
	}
	if g.Batch < 0 {
		bad = append(bad, fmt.Sprintf("batch=%d", g.Batch))
	}
	if g.Batch > 1 && g.M > 0 && g.N > 0 && g.StrideC < int64(g.LDC)*int64(g.N-1)+int64(g.M) {
		bad = append(bad, fmt.Sprintf("strideC=%d: the outputs of a batch (%d x %d, ldc %d) overlap", g.StrideC, g.M, g.N, g.LDC))
	}
	if len(bad) > 0 {
		return fmt.Errorf("cuda: %v: CUBLAS_STATUS_INVALID_VALUE: %s", g, strings.Join(bad, "; "))
	}
	return nil
}

// extent is the number of elements a batch of column-major operands of
// rows x cols with leading dimension ld spans.
func extent(rows, cols, ld int, stride int64, batch int) int64 {
	if rows == 0 || cols == 0 {
		return 0
	}
	return int64(max(batch, 1)-1)*stride + int64(ld)*int64(cols-1) + int64(rows)
}

// EvalGemm evaluates g on the host with cuBLAS's column-major semantics:
// for each batch item b, C[i + j·ldc] = alpha Σ_l op(A)(i, l) op(B)(l, j) +
// beta C[i + j·ldc], where op(A)(i, l) is A[i + l·lda], or A[l + i·lda]
// when TransA (likewise B). a and b are cuBLAS's A and B (EvalRowMajor
// takes the row-major operands), c is read unless beta is 0 (as cuBLAS, so
// NaN in an output written with beta 0 does not spread). Sums are in
// float64, each result rounded to float32. It returns cuBLAS's
// INVALID_VALUE cases as errors, and an error when an operand is shorter
// than the call reads (on the device: a wrong result or a fault).
func EvalGemm(g GemmCall, a, b, c []float32) error {
	if err := g.Validate(); err != nil {
		return err
	}
	ar, ac := opShape(g.TransA, g.M, g.K)
	br, bc := opShape(g.TransB, g.K, g.N)
	for _, o := range []struct {
		name           string
		n              int
		rows, cols, ld int
		stride         int64
	}{{"A", len(a), ar, ac, g.LDA, g.StrideA}, {"B", len(b), br, bc, g.LDB, g.StrideB}, {"C", len(c), g.M, g.N, g.LDC, g.StrideC}} {
		if e := extent(o.rows, o.cols, o.ld, o.stride, g.Batch); e > int64(o.n) {
			return fmt.Errorf("cuda: %v: operand %s (%d x %d, ld %d) reads %d elements, the buffer holds %d", g, o.name, o.rows, o.cols, o.ld, e, o.n)
		}
	}
	at := func(x []float32, trans bool, ld, i, l int) float32 {
		if trans {
			return x[l+i*ld]
		}
		return x[i+l*ld]
	}
	for bi := 0; bi < max(g.Batch, 1); bi++ {
		ab, bb, cb := a, b, c
		if g.Batch > 0 {
			ab, bb, cb = a[int64(bi)*g.StrideA:], b[int64(bi)*g.StrideB:], c[int64(bi)*g.StrideC:]
		}
		for j := 0; j < g.N; j++ {
			for i := 0; i < g.M; i++ {
				var s float64
				for l := 0; l < g.K; l++ {
					s += float64(at(ab, g.TransA, g.LDA, i, l)) * float64(at(bb, g.TransB, g.LDB, l, j))
				}
				s *= float64(g.Alpha)
				if g.Beta != 0 {
					s += float64(g.Beta) * float64(cb[i+j*g.LDC])
				}
				cb[i+j*g.LDC] = float32(s)
			}
		}
	}
	return nil
}

// EvalRowMajor is EvalGemm with the row-major operands of the product g
// was mapped from (left, right), put in cuBLAS's order as the device does.
func EvalRowMajor(g GemmCall, left, right, c []float32) error {
	if g.SwapAB {
		left, right = right, left
	}
	return EvalGemm(g, left, right, c)
}
