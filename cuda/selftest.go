//go:build rellagpu

package cuda

import (
	"context"
	"fmt"
	"math/rand/v2"
)

// CheckResult is the outcome of one comparison of a kernel (or GEMM) on the
// device with its CPU reference.
type CheckResult struct {
	Name   string  // kernel and shape, e.g. "attention B=4 H=8 KV=2 hd=64"
	Elem   Elem    // storage type the kernel ran with
	RelErr float64 // ||got-ref|| / ||ref||
	Err    error   // nil when every element is within tolerance
}

// CheckKernels runs every kernel and both cuBLAS GEMMs on d with fresh
// random inputs drawn from seed, for F32 and for the device's half type
// (bf16 on sm_80+, fp16 before), and compares each output with the CPU
// reference: |got-ref| <= atol + rtol*|ref| per element (NaN never passes,
// outputs are poisoned with NaN first) and ||got-ref||/||ref|| below rtol.
// The error is for failures that stop the checks (compiling, memory); a
// kernel that computes wrong values gives a result with Err set.
func CheckKernels(ctx context.Context, d *Device, seed uint64) ([]CheckResult, error) {
	return runChecks(ctx, d, seed, 0, (*checker).all)
}

// runChecks runs suite once per storage type (F32 and the device's half
// type), with the kernels compiled for that type and inputs drawn from
// PCG(seed, stream+type), and gathers the results; a fatal error stops it.
func runChecks(ctx context.Context, d *Device, seed, stream uint64, suite func(*checker)) ([]CheckResult, error) {
	var results []CheckResult
	err := d.Do(func() error {
		blas, err := d.NewBLAS()
		if err != nil {
			return err
		}
		defer blas.Destroy()
		for _, e := range []Elem{F32, ElemFor(d.Major, d.Minor)} {
			if err := ctx.Err(); err != nil {
				return err
			}
			m, err := d.LoadKernels(e)
			if err != nil {
				return err
			}
			c := &checker{d: d, o: ops{d, m}, blas: blas, e: e, r: rand.New(rand.NewPCG(seed, stream+uint64(e)))}
			suite(c)
			m.Unload()
			results = append(results, c.results...)
			if c.fatal != nil {
				return c.fatal
			}
		}
		return nil
	})
	return results, err
}

// checker runs the comparisons for one storage type (on the device thread).
type checker struct {
	d       *Device
	o       ops
	blas    *BLAS
	e       Elem
	r       *rand.Rand
	results []CheckResult
	fatal   error
	bufs    []Buffer
}

func (c *checker) tol() (atol, rtol float64) {
	if c.e == F32 {
		return ATolF32, RTolF32
	}
	return ATolHalf, RTolHalf
}

func (c *checker) randn(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(c.r.NormFloat64())
	}
	return v
}

// in uploads v as type t and returns the buffer and the values as the device sees them.
func (c *checker) in(v []float32, t Elem) (Buffer, []float32) {
	if c.fatal != nil {
		return Buffer{}, nil
	}
	b, err := c.d.uploadFloats(v, t)
	if err != nil {
		c.fatal = err
		return Buffer{}, nil
	}
	c.bufs = append(c.bufs, b)
	return b, t.Round(v)
}

func (c *checker) ints(v []int) Buffer {
	if c.fatal != nil {
		return Buffer{}
	}
	b, err := c.d.uploadInts(v)
	if err != nil {
		c.fatal = err
	}
	c.bufs = append(c.bufs, b)
	return b
}

// out allocates and poisons an output of n values of type t.
func (c *checker) out(n int, t Elem) Buffer {
	if c.fatal != nil {
		return Buffer{}
	}
	b, err := c.d.Alloc(int64(n * t.Size()))
	if err == nil {
		err = c.d.Poison(b, t)
	}
	if err != nil {
		c.fatal = err
	}
	c.bufs = append(c.bufs, b)
	return b
}

// compare runs launch, reads n values of type t from out and compares them with want.
func (c *checker) compare(name string, out Buffer, t Elem, want []float32, launch func() error) {
	defer func() {
		for _, b := range c.bufs {
			c.d.Free(b)
		}
		c.bufs = nil
	}()
	if c.fatal != nil {
		return
	}
	res := CheckResult{Name: name, Elem: c.e}
	if err := launch(); err != nil {
		c.fatal = fmt.Errorf("%s (%v): %w", name, c.e, err)
		return
	}
	got, err := c.d.downloadFloats(out, len(want), t)
	if err != nil {
		c.fatal = fmt.Errorf("%s (%v): %w", name, c.e, err)
		return
	}
	atol, rtol := c.tol()
	res.RelErr = RelErr(got, want)
	res.Err = Compare(name, got, want, atol, rtol)
	if res.Err == nil && !(res.RelErr <= rtol) {
		res.Err = fmt.Errorf("%s: relative error %.3g above %g", name, res.RelErr, rtol)
	}
	c.results = append(c.results, res)
}

func (c *checker) all() {
	e := c.e
	{ // embedding gather
		const vocab, d, n = 50, 96, 37
		table, tableR := c.in(c.randn(vocab*d), e)
		ids := make([]int, n)
		for i := range ids {
			ids[i] = c.r.IntN(vocab)
		}
		idb := c.ints(ids)
		out := c.out(n*d, F32)
		c.compare("embed_gather n=37 d=96", out, F32, EmbedRef(tableR, d, ids), func() error { return c.o.embed(out, table, idb, n, d, vocab) })
	}
	for _, d := range []int{64, 4096} { // RMSNorm
		const n = 13
		x, xR := c.in(c.randn(n*d), F32)
		w, wR := c.in(c.randn(d), e)
		out := c.out(n*d, e)
		c.compare(fmt.Sprintf("rmsnorm n=%d d=%d", n, d), out, e, RMSNormRef(xR, wR, n, d, 1e-5),
			func() error { return c.o.rmsnorm(out, x, w, n, d, 1e-5) })
	}
	for _, hd := range []int{8, 64, 128} { // RoPE
		const heads = 4
		cu := Offsets([]int{3, 17, 40})
		n := cu[len(cu)-1]
		pos := Positions(cu)
		x, xR := c.in(c.randn(n*heads*hd), e)
		pb := c.ints(pos)
		c.compare(fmt.Sprintf("rope n=%d heads=%d hd=%d", n, heads, hd), x, e, RoPERef(xR, pos, heads, hd, 10000),
			func() error { return c.o.rope(x, pb, n, heads, hd, 10000) })
	}
	for _, s := range []struct {
		lens      []int
		H, KV, hd int
	}{{[]int{1, 7, 33, 70}, 8, 2, 64}, {[]int{130}, 4, 4, 128}, {[]int{5, 40}, 8, 4, 8}, {[]int{9, 64, 65}, 6, 3, 80}} {
		cu := Offsets(s.lens)
		n, maxLen := cu[len(cu)-1], 0
		for _, l := range s.lens {
			maxLen = max(maxLen, l)
		}
		q, qR := c.in(c.randn(n*s.H*s.hd), e)
		k, kR := c.in(c.randn(n*s.KV*s.hd), e)
		v, vR := c.in(c.randn(n*s.KV*s.hd), e)
		cb := c.ints(cu)
		out := c.out(n*s.H*s.hd, e)
		c.compare(fmt.Sprintf("attention lens=%v H=%d KV=%d hd=%d", s.lens, s.H, s.KV, s.hd), out, e,
			AttentionRef(qR, kR, vR, cu, s.H, s.KV, s.hd),
			func() error { return c.o.attention(out, q, k, v, cb, len(s.lens), maxLen, s.H, s.KV, s.hd) })
	}
	{ // SwiGLU, residual add
		const n = 10007
		g, gR := c.in(c.randn(n), e)
		u, uR := c.in(c.randn(n), e)
		out := c.out(n, e)
		c.compare("swiglu n=10007", out, e, SwiGLURef(gR, uR), func() error { return c.o.swiglu(out, g, u, n) })
		x, xR := c.in(c.randn(n), F32)
		y, yR := c.in(c.randn(n), e)
		c.compare("residual_add n=10007", x, F32, ResidualAddRef(xR, yR), func() error { return c.o.residualAdd(x, y, n) })
	}
	{ // last-position gather, mean pooling
		const d = 96
		cu := Offsets([]int{1, 9, 30})
		n := cu[len(cu)-1]
		x, xR := c.in(c.randn(n*d), F32)
		cb := c.ints(cu)
		out := c.out(3*d, F32)
		c.compare("gather_last B=3 d=96", out, F32, GatherLastRef(xR, cu, d), func() error { return c.o.gatherLast(out, x, cb, 3, d) })
		h, hR := c.in(c.randn(n*d), e)
		cb = c.ints(cu)
		out = c.out(3*d, F32)
		c.compare("mean_pool B=3 d=96", out, F32, MeanPoolRef(hR, cu, d), func() error { return c.o.meanPool(out, h, cb, 3, d) })
	}
	{ // LM head restricted to rows
		const B, V, d = 5, 1000, 256
		rows := []int{999, 0, 17, 17, 512}
		h, hR := c.in(c.randn(B*d), e)
		w, wR := c.in(c.randn(V*d), e)
		rb := c.ints(rows)
		out := c.out(B*len(rows), F32)
		c.compare("lm_head_rows B=5 R=5 d=256", out, F32, LMHeadRowsRef(hR, wR, rows, d),
			func() error { return c.o.lmHeadRows(out, h, w, rb, B, len(rows), d) })
	}
	for _, yt := range []Elem{F32, e} { // cuBLAS GemmEx as a projection
		const rows, in, outDim = 37, 200, 130
		x, xR := c.in(c.randn(rows*in), e)
		w, wR := c.in(c.randn(outDim*in), e)
		y := c.out(rows*outDim, yt)
		c.compare(fmt.Sprintf("cublasGemmEx linear %dx%d·%dx%dᵀ -> %v", rows, in, outDim, in, yt), y, yt, linearRef(xR, wR, rows, in),
			func() error {
				return c.blas.Linear(Mat{Buf: y, Type: yt}, Mat{Buf: x, Type: e}, Mat{Buf: w, Type: e}, rows, in, outDim, 0)
			})
	}
	{ // cuBLAS GemmStridedBatchedEx: batch of projections
		const batch, rows, in, outDim = 3, 19, 72, 40
		x, xR := c.in(c.randn(batch*rows*in), e)
		w, wR := c.in(c.randn(batch*outDim*in), e)
		y := c.out(batch*rows*outDim, F32)
		var want []float32
		for i := 0; i < batch; i++ {
			want = append(want, linearRef(xR[i*rows*in:(i+1)*rows*in], wR[i*outDim*in:(i+1)*outDim*in], rows, in)...)
		}
		c.compare("cublasGemmStridedBatchedEx batch=3", y, F32, want, func() error {
			return c.blas.Run(RowMajorGemmBatched(false, true, rows, outDim, in, 1, 0, rows*in, outDim*in, rows*outDim, batch),
				Mat{Buf: x, Type: e}, Mat{Buf: w, Type: e}, Mat{Buf: y, Type: F32})
		})
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }
