package kernelexec

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/rella-project/rella/cuda"
)

// The suite runs every kernel of the source on the shapes of the device
// self-test (cuda/selftest.go CheckKernels, cuda/train_selftest.go
// CheckTrainKernels) and compares it with the same Go references at the same
// tolerances: fp32 rtol/atol 1e-5, bf16/fp16 1e-2, per element and in
// relative norm; masks, AdamW, scale_f32 and the half conversions exactly.
// Outputs start as NaN; outputs that are added into start from random values.
// The launch geometry of each kernel is that of its launcher (cuda/ops.go,
// cuda/train_ops.go): 256 threads per block, attention grids of ATT_QT rows.
// The GEMMs (cuBLAS on the device) are computed in Go where a composition
// needs them (the chunked cross-entropy).

const threads = 256

func blocks(n int64) uint32 { return uint32((n + threads - 1) / threads) }

// linear is the grid of an elementwise kernel over n values.
func linear(n int64) (Dim, Dim) { return Dim{blocks(n), 1, 1}, Dim{threads, 1, 1} }

// warpGrid is the grid of a kernel with one warp per item (lm_head_rows, attention_bwd_pre).
func warpGrid(items int64) (Dim, Dim) {
	return Dim{uint32((items*32 + threads - 1) / threads), 1, 1}, Dim{threads, 1, 1}
}

const attQT = 8

// attGrid is the grid of the attention kernels: ATT_QT rows per block.
func attGrid(maxLen, B, heads int) (Dim, Dim) {
	return Dim{uint32((maxLen + attQT - 1) / attQT), uint32(B), uint32(heads)}, Dim{attQT * 32, 1, 1}
}

// suite runs the cases for one harness and schedule and collects failures.
type suite struct {
	ctx      context.Context
	h        *Harness
	e        cuda.Elem
	sched    Schedule
	seed     uint64
	r        *rand.Rand
	fails    []string
	cases    int
	only     map[string]bool          // when set, the case groups to run
	timing   map[string]time.Duration // when set, time per case group
	launched map[string]bool          // kernels launched
}

func newSuite(ctx context.Context, h *Harness, sched Schedule, seed uint64) *suite {
	return &suite{ctx: ctx, h: h, e: h.Elem, sched: sched, seed: seed, r: rand.New(rand.NewPCG(seed, 0xc0de+uint64(h.Elem)))}
}

func (c *suite) fail(name string, err error) {
	c.fails = append(c.fails, fmt.Sprintf("%s: %v", name, err))
}

// launch runs one kernel; a fault is recorded as a failure of case name.
func (c *suite) launch(name, kernel string, grid, block Dim, args ...any) bool {
	if c.launched == nil {
		c.launched = map[string]bool{}
	}
	c.launched[kernel] = true
	if err := c.h.Launch(c.ctx, kernel, grid, block, c.sched, c.seed^uint64(c.cases)*0x9e3779b97f4a7c15, args...); err != nil {
		c.fail(name, err)
		return false
	}
	return true
}

func (c *suite) randn(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(c.r.NormFloat64())
	}
	return v
}

// in returns v as a buffer of type t and the values as the kernel sees them.
func in(v []float32, t cuda.Elem) (*Buf, []float32) { return &Buf{Data: t.Encode(v)}, t.Round(v) }

// out is an output of n values of type t, poisoned with NaN as Device.Poison does.
func out(n int, t cuda.Elem) *Buf {
	b := make([]byte, n*t.Size())
	for i := 0; i < len(b); i += t.Size() {
		switch t {
		case cuda.F32:
			binary.LittleEndian.PutUint32(b[i:], 0x7fc00000)
		case cuda.BF16:
			binary.LittleEndian.PutUint16(b[i:], 0x7fc0)
		default:
			binary.LittleEndian.PutUint16(b[i:], 0x7e00)
		}
	}
	return &Buf{Data: b}
}

func ints(v []int) *Buf {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(int32(x)))
	}
	return &Buf{Data: b}
}

func (b *Buf) floats(t cuda.Elem) []float32 { return t.Decode(b.Data) }

// f64 passes a float64 as the bits of a long long, as the launchers do.
func f64(x float64) int64 { return int64(math.Float64bits(x)) }

// near compares got with want at the suite's tolerance (fp32 for f32
// kernels, half otherwise, as the device self-test) and in relative norm.
func (c *suite) near(name, tensor string, got, want []float32) {
	atol, rtol := cuda.ATolF32, cuda.RTolF32
	if c.e != cuda.F32 {
		atol, rtol = cuda.ATolHalf, cuda.RTolHalf
	}
	if err := cuda.Compare(tensor, got, want, atol, rtol); err != nil {
		c.fail(name, err)
		return
	}
	if rel := cuda.RelErr(got, want); !(rel <= rtol) {
		c.fail(name, fmt.Errorf("%s: relative error %.3g above %g", tensor, rel, rtol))
	}
}

// group runs f as the case group name unless c.only excludes it.
func (c *suite) group(name string, f func()) {
	if c.only != nil && !c.only[name] {
		return
	}
	c.cases++
	start := time.Now()
	f()
	if c.timing != nil {
		c.timing[name] += time.Since(start)
	}
}

// all runs every case group.
func (c *suite) all() {
	c.group("embed_gather", c.embed)
	c.group("rmsnorm", c.rmsnorm)
	c.group("rope", c.rope)
	c.group("attention", c.attention)
	c.group("elementwise", c.elementwise)
	c.group("rows", c.rows)
	c.group("lm_head_rows", c.lmHead)
	c.group("cast_elem", c.castElem)
	c.group("rmsnorm_bwd", c.rmsnormBwd)
	c.group("rope_bwd", c.ropeBwd)
	c.group("attention_train", c.attentionTrain)
	c.group("swiglu_bwd", c.swigluBwd)
	c.group("dropout", c.dropout)
	c.group("train_rows", c.trainRows)
	c.group("cross_entropy", c.crossEntropy)
	c.group("optimiser", c.optimiser)
	c.group("dequant_int8", c.dequantInt8)
	c.group("conversions", c.conversions)
}

func (c *suite) embed() {
	const vocab, d, n = 50, 96, 37
	table, tableR := in(c.randn(vocab*d), c.e)
	ids := make([]int, n)
	for i := range ids {
		ids[i] = c.r.IntN(vocab)
	}
	o := out(n*d, cuda.F32)
	g, b := linear(n * d)
	if c.launch("embed_gather n=37 d=96", "embed_gather", g, b, o, table, ints(ids), n, d, vocab) {
		c.near("embed_gather n=37 d=96", "out", o.floats(cuda.F32), cuda.EmbedRef(tableR, d, ids))
	}
}

func (c *suite) rmsnorm() {
	for _, d := range []int{64, 4096} {
		const n = 13
		name := fmt.Sprintf("rmsnorm n=%d d=%d", n, d)
		x, xR := in(c.randn(n*d), cuda.F32)
		w, wR := in(c.randn(d), c.e)
		o := out(n*d, c.e)
		if c.launch(name, "rmsnorm", Dim{n, 1, 1}, Dim{threads, 1, 1}, o, x, w, n, d, float32(1e-5)) {
			c.near(name, "out", o.floats(c.e), cuda.RMSNormRef(xR, wR, n, d, 1e-5))
		}
	}
}

func (c *suite) rope() {
	for _, hd := range []int{8, 64, 128} {
		const heads = 4
		cu := cuda.Offsets([]int{3, 17, 40})
		n := cu[len(cu)-1]
		pos := cuda.Positions(cu)
		name := fmt.Sprintf("rope n=%d heads=%d hd=%d", n, heads, hd)
		x, xR := in(c.randn(n*heads*hd), c.e)
		g, b := linear(int64(n * heads * hd / 2))
		if c.launch(name, "rope", g, b, x, ints(pos), n, heads, hd, float32(10000)) {
			c.near(name, "x", x.floats(c.e), cuda.RoPERef(xR, pos, heads, hd, 10000))
		}
	}
}

// attShapes are the packed shapes of the device self-test: odd lengths,
// lengths above one key tile (32) and above 4 tiles, GQA groups of 4, 2, 1,
// head dims 8, 64, 80, 128.
var attShapes = []struct {
	lens      []int
	H, KV, hd int
}{{[]int{1, 7, 33, 70}, 8, 2, 64}, {[]int{130}, 4, 4, 128}, {[]int{5, 40}, 8, 4, 8}, {[]int{9, 64, 65}, 6, 3, 80}}

func maxOf(v []int) int { return slices.Max(v) }

func (c *suite) attention() {
	for _, s := range attShapes {
		cu := cuda.Offsets(s.lens)
		n := cu[len(cu)-1]
		name := fmt.Sprintf("attention lens=%v H=%d KV=%d hd=%d", s.lens, s.H, s.KV, s.hd)
		q, qR := in(c.randn(n*s.H*s.hd), c.e)
		k, kR := in(c.randn(n*s.KV*s.hd), c.e)
		v, vR := in(c.randn(n*s.KV*s.hd), c.e)
		o := out(n*s.H*s.hd, c.e)
		g, b := attGrid(maxOf(s.lens), len(s.lens), s.H)
		scale := float32(1 / math.Sqrt(float64(s.hd)))
		if c.launch(name, "attention", g, b, o, q, k, v, ints(cu), s.H, s.KV, s.hd, scale) {
			c.near(name, "out", o.floats(c.e), cuda.AttentionRef(qR, kR, vR, cu, s.H, s.KV, s.hd))
		}
	}
}

func (c *suite) elementwise() {
	const n = 10007
	g, b := linear(n)
	gb, gR := in(c.randn(n), c.e)
	ub, uR := in(c.randn(n), c.e)
	o := out(n, c.e)
	if c.launch("swiglu n=10007", "swiglu", g, b, o, gb, ub, int64(n)) {
		c.near("swiglu n=10007", "out", o.floats(c.e), cuda.SwiGLURef(gR, uR))
	}
	x, xR := in(c.randn(n), cuda.F32)
	y, yR := in(c.randn(n), c.e)
	if c.launch("residual_add n=10007", "residual_add", g, b, x, y, int64(n)) {
		c.near("residual_add n=10007", "x", x.floats(cuda.F32), cuda.ResidualAddRef(xR, yR))
	}
}

func (c *suite) rows() {
	const d = 96
	cu := cuda.Offsets([]int{1, 9, 30})
	n := cu[len(cu)-1]
	x, xR := in(c.randn(n*d), cuda.F32)
	o := out(3*d, cuda.F32)
	g, b := linear(3 * d)
	if c.launch("gather_last B=3 d=96", "gather_last", g, b, o, x, ints(cu), 3, d) {
		c.near("gather_last B=3 d=96", "out", o.floats(cuda.F32), cuda.GatherLastRef(xR, cu, d))
	}
	h, hR := in(c.randn(n*d), c.e)
	o = out(3*d, cuda.F32)
	if c.launch("mean_pool B=3 d=96", "mean_pool", Dim{blocks(d), 3, 1}, Dim{threads, 1, 1}, o, h, ints(cu), 3, d) {
		c.near("mean_pool B=3 d=96", "out", o.floats(cuda.F32), cuda.MeanPoolRef(hR, cu, d))
	}
}

func (c *suite) lmHead() {
	const B, V, d = 5, 1000, 256
	rows := []int{999, 0, 17, 17, 512}
	h, hR := in(c.randn(B*d), c.e)
	w, wR := in(c.randn(V*d), c.e)
	o := out(B*len(rows), cuda.F32)
	g, b := warpGrid(int64(B * len(rows)))
	if c.launch("lm_head_rows B=5 R=5 d=256", "lm_head_rows", g, b, o, h, w, ints(rows), B, len(rows), d) {
		c.near("lm_head_rows B=5 R=5 d=256", "out", o.floats(cuda.F32), cuda.LMHeadRowsRef(hR, wR, rows, d))
	}
}

func (c *suite) castElem() {
	const n = 1001
	x, xR := in(c.randn(n), cuda.F32)
	o := out(n, c.e)
	g, b := linear(n)
	if c.launch("cast_elem n=1001", "cast_elem", g, b, o, x, int64(n)) {
		c.near("cast_elem n=1001", "out", o.floats(c.e), c.e.Round(xR))
	}
}

func (c *suite) rmsnormBwd() {
	for _, d := range []int{64, 4096} {
		const n = 13
		name := fmt.Sprintf("rmsnorm_bwd n=%d d=%d (adds)", n, d)
		x, xR := in(c.randn(n*d), cuda.F32)
		w, wR := in(c.randn(d), c.e)
		dy, dyR := in(c.randn(n*d), cuda.F32)
		dx0 := c.randn(n * d)
		dx, _ := in(dx0, cuda.F32)
		want := cuda.ResidualAddRef(dx0, cuda.RMSNormBwdRef(xR, wR, dyR, n, d, 1e-5))
		if c.launch(name, "rmsnorm_bwd", Dim{n, 1, 1}, Dim{threads, 1, 1}, dx, dy, x, w, n, d, float32(1e-5)) {
			c.near(name, "dx", dx.floats(cuda.F32), want)
		}
	}
}

func (c *suite) ropeBwd() {
	for _, hd := range []int{8, 80, 128} {
		const heads = 4
		cu := cuda.Offsets([]int{3, 17, 40})
		n := cu[len(cu)-1]
		pos := cuda.Positions(cu)
		name := fmt.Sprintf("rope_bwd n=%d heads=%d hd=%d", n, heads, hd)
		x, xR := in(c.randn(n*heads*hd), c.e)
		g, b := linear(int64(n * heads * hd / 2))
		if c.launch(name, "rope_bwd", g, b, x, ints(pos), n, heads, hd, float32(10000)) {
			c.near(name, "x", x.floats(c.e), cuda.RoPEBwdRef(xR, pos, heads, hd, 10000))
		}
	}
}

// attentionTrain checks attention_fwd (output and lse), attention_bwd_pre,
// attention_bwd_dq and attention_bwd_dkv; the backward kernels get lse and
// dd from the references, so each kernel is checked on its own.
func (c *suite) attentionTrain() {
	e := c.e
	for _, s := range attShapes {
		cu := cuda.Offsets(s.lens)
		n, B, H, KV, hd := cu[len(cu)-1], len(s.lens), s.H, s.KV, s.hd
		shape := fmt.Sprintf("lens=%v H=%d KV=%d hd=%d", s.lens, H, KV, hd)
		scale := float32(1 / math.Sqrt(float64(hd)))
		qv, kv, vv, gv := c.randn(n*H*hd), c.randn(n*KV*hd), c.randn(n*KV*hd), c.randn(n*H*hd)
		qR, kR, vR, gR := e.Round(qv), e.Round(kv), e.Round(vv), e.Round(gv)
		oRef, lseRef := cuda.AttentionLSERef(qR, kR, vR, cu, H, KV, hd)
		q, _ := in(qv, e)
		k, _ := in(kv, e)
		v, _ := in(vv, e)
		g, _ := in(gv, e)
		cb := ints(cu)
		grid, blk := attGrid(maxOf(s.lens), B, H)
		name := "attention_fwd " + shape
		o, lse := out(n*H*hd, e), out(n*H, cuda.F32)
		if c.launch(name, "attention_fwd", grid, blk, o, lse, q, k, v, cb, H, KV, hd, scale) {
			c.near(name, "o", o.floats(e), oRef)
			c.near(name, "lse", lse.floats(cuda.F32), lseRef)
		}
		name = "attention_bwd_pre " + shape
		ob, oR := in(oRef, e)
		dd := out(n*H, cuda.F32)
		wg, wb := warpGrid(int64(n * H))
		if c.launch(name, "attention_bwd_pre", wg, wb, dd, ob, g, n, H, hd) {
			c.near(name, "dd", dd.floats(cuda.F32), cuda.AttentionBwdPreRef(oR, gR, n, H, hd))
		}
		ddRef := cuda.AttentionBwdPreRef(oRef, gR, n, H, hd)
		wq, wk, wv := cuda.AttentionBwdRef(qR, kR, vR, gR, cu, H, KV, hd)
		lseB, _ := in(lseRef, cuda.F32)
		ddB, _ := in(ddRef, cuda.F32)
		name = "attention_bwd_dq " + shape
		dq := out(n*H*hd, e)
		if c.launch(name, "attention_bwd_dq", grid, blk, dq, q, k, v, g, lseB, ddB, cb, H, KV, hd, scale) {
			c.near(name, "dq", dq.floats(e), wq)
		}
		name = "attention_bwd_dkv " + shape
		dk, dv := out(n*KV*hd, e), out(n*KV*hd, e)
		kg, kb := attGrid(maxOf(s.lens), B, KV)
		if c.launch(name, "attention_bwd_dkv", kg, kb, dk, dv, q, k, v, g, lseB, ddB, cb, H, KV, hd, scale) {
			c.near(name, "dk", dk.floats(e), wk)
			c.near(name, "dv", dv.floats(e), wv)
		}
	}
}

func (c *suite) swigluBwd() {
	const n = 10007
	g, gR := in(c.randn(n), c.e)
	u, uR := in(c.randn(n), c.e)
	dy, dyR := in(c.randn(n), c.e)
	dg, du := out(n, c.e), out(n, c.e)
	wg, wu := cuda.SwiGLUBwdRef(gR, uR, dyR)
	gr, b := linear(n)
	if c.launch("swiglu_bwd n=10007", "swiglu_bwd", gr, b, dg, du, g, u, dy, int64(n)) {
		c.near("swiglu_bwd n=10007", "dg", dg.floats(c.e), wg)
		c.near("swiglu_bwd n=10007", "du", du.floats(c.e), wu)
	}
}

func keepScale(p float64) float32 { return float32(1 / (1 - p)) }

func (c *suite) dropout() {
	const dropRun = 64
	for _, dc := range []struct {
		first, n int64
		p        float64
	}{{0, 5000, 0.1}, {1_000_003, 777, 0.05}, {64, 129, 0}, {3, 20_000, 0.5}} { // exact
		seed, stream := c.r.Uint64(), uint64(c.r.IntN(300)+1)
		name := fmt.Sprintf("dropout_mask first=%d n=%d p=%g (exact)", dc.first, dc.n, dc.p)
		want := cuda.DropoutKeepRef(seed, stream, dc.first, dc.n, dc.p)
		keep := &Buf{Data: slices.Repeat([]byte{7}, int(dc.n))}
		g, b := linear((dc.n + dropRun - 1) / dropRun)
		if c.launch(name, "dropout_mask", g, b, keep, int64(seed), int64(stream), dc.first, dc.n, cuda.DropoutThreshold(dc.p)) {
			bad := 0
			for i := range want {
				if keep.Data[i] != want[i] {
					bad++
				}
			}
			if bad > 0 {
				c.fail(name, fmt.Errorf("keep: %d of %d flags differ from cpu.DropoutMasks' draws", bad, dc.n))
			}
		}
	}
	const n, p = 4099, 0.25
	flags := cuda.DropoutKeepRef(c.r.Uint64(), 1, 0, n, p)
	mask := make([]float32, n)
	for i, k := range flags {
		mask[i] = float32(k) * keepScale(p)
	}
	g, b := linear(n)
	x, xR := in(c.randn(n), c.e)
	o := out(n, c.e)
	want := make([]float32, n)
	for i := range want {
		want[i] = xR[i] * mask[i]
	}
	if c.launch("dropout_apply n=4099 p=0.25", "dropout_apply", g, b, o, x, &Buf{Data: slices.Clone(flags)}, int64(n), keepScale(p)) {
		c.near("dropout_apply n=4099 p=0.25", "out", o.floats(c.e), c.e.Round(want))
	}
	gb, gR := in(c.randn(n), cuda.F32)
	dx0 := c.randn(n)
	dx, _ := in(dx0, cuda.F32)
	for i := range want {
		want[i] = dx0[i] + gR[i]*mask[i]
	}
	if c.launch("mask_mul_add n=4099 p=0.25 (adds)", "mask_mul_add", g, b, dx, gb, &Buf{Data: slices.Clone(flags)}, int64(n), keepScale(p)) {
		c.near("mask_mul_add n=4099 p=0.25 (adds)", "dx", dx.floats(cuda.F32), want)
	}
}

func (c *suite) trainRows() {
	const N, d = 50, 96
	idx := []int{49, 0, 7, 8, 30}
	x, xR := in(c.randn(N*d), cuda.F32)
	o := out(len(idx)*d, cuda.F32)
	var want []float32
	for _, i := range idx {
		want = append(want, xR[i*d:(i+1)*d]...)
	}
	g, b := linear(int64(len(idx) * d))
	if c.launch("gather_rows R=5 d=96", "gather_rows", g, b, o, x, ints(idx), len(idx), d) {
		c.near("gather_rows R=5 d=96", "out", o.floats(cuda.F32), want)
	}
	gb, gR := in(c.randn(len(idx)*d), cuda.F32)
	dx0 := c.randn(N * d)
	dx, _ := in(dx0, cuda.F32)
	want = slices.Clone(dx0)
	for r, i := range idx {
		for k := 0; k < d; k++ {
			want[i*d+k] += gR[r*d+k]
		}
	}
	if c.launch("scatter_add_rows R=5 d=96 (adds)", "scatter_add_rows", g, b, dx, gb, ints(idx), len(idx), d) {
		c.near("scatter_add_rows R=5 d=96 (adds)", "dx", dx.floats(cuda.F32), want)
	}
}

// crossEntropy runs the chunked cross-entropy as crossEntropyOn
// (cuda/train_step.go) does: per vocabulary chunk the logits z = h Wcᵀ (a
// GEMM: computed here in float64, stored as float32 like cuBLAS's f32
// output), ce_stats; ce_finish; per chunk again z, ce_grad, dh += dz Wc.
// The chunks of 128 and 300 do not divide V = 1000.
func (c *suite) crossEntropy() {
	e := c.e
	for _, vc := range []int{128, 300, 1000} {
		const R, V, d = 6, 1000, 64
		name := fmt.Sprintf("cross-entropy R=%d V=%d d=%d chunk=%d (ce_stats, ce_finish, ce_grad)", R, V, d, vc)
		hv, wv := c.randn(R*d), c.randn(V*d)
		for i := range hv {
			hv[i] *= 0.2
		}
		hR, wR := e.Round(hv), e.Round(wv)
		labels := make([]int, R)
		for i := range labels {
			labels[i] = c.r.IntN(V)
		}
		labels[0] = V - 1
		wantLoss, wantDh := cuda.CrossEntropyRef(hR, wR, labels, d, 1)
		dh0 := c.randn(R * d)
		wantDh = cuda.ResidualAddRef(dh0, wantDh)
		dh := slices.Clone(dh0)
		lb := ints(labels)
		m, s, zlab := out(R, cuda.F32), out(R, cuda.F32), out(R, cuda.F32)
		logits := func(v0, nc int) *Buf {
			z := make([]float32, R*nc)
			for r := 0; r < R; r++ {
				for j := 0; j < nc; j++ {
					var acc float64
					for k := 0; k < d; k++ {
						acc += float64(hR[r*d+k]) * float64(wR[(v0+j)*d+k])
					}
					z[r*nc+j] = float32(acc)
				}
			}
			return &Buf{Data: cuda.F32.Encode(z)}
		}
		ok := true
		for v0 := 0; v0 < V && ok; v0 += vc {
			nc := min(vc, V-v0)
			ok = c.launch(name, "ce_stats", Dim{R, 1, 1}, Dim{threads, 1, 1}, m, s, zlab, logits(v0, nc), lb, R, nc, v0)
		}
		lse, loss := out(R, cuda.F32), out(R, cuda.F32)
		g, b := linear(R)
		ok = ok && c.launch(name, "ce_finish", g, b, lse, loss, m, s, zlab, R)
		for v0 := 0; v0 < V && ok; v0 += vc {
			nc := min(vc, V-v0)
			dz := out(R*nc, e)
			g, b := linear(int64(R * nc))
			if ok = c.launch(name, "ce_grad", g, b, dz, logits(v0, nc), lse, lb, R, nc, v0, float32(1)); !ok {
				break
			}
			dzv := dz.floats(e)
			for r := 0; r < R; r++ {
				for k := 0; k < d; k++ {
					var acc float64
					for j := 0; j < nc; j++ {
						acc += float64(dzv[r*nc+j]) * float64(wR[(v0+j)*d+k])
					}
					dh[r*d+k] = float32(float64(dh[r*d+k]) + acc)
				}
			}
		}
		if !ok {
			continue
		}
		want32 := make([]float32, R)
		for i, l := range wantLoss {
			want32[i] = float32(l)
		}
		c.near(name, "loss", loss.floats(cuda.F32), want32)
		c.near(name, "dh", dh, wantDh)
	}
}

func (c *suite) optimiser() {
	{ // adamw: bit-identical to AdamWRef (and so to trainer.AdamW)
		const n = 5003
		p0, m0, v0, g0 := c.randn(n), c.randn(n), c.randn(n), c.randn(n)
		for i := range v0 {
			v0[i] *= v0[i]
		}
		p, _ := in(p0, cuda.F32)
		m, _ := in(m0, cuda.F32)
		v, _ := in(v0, cuda.F32)
		g, _ := in(g0, cuda.F32)
		const b1, b2, eps = 0.9, 0.999, 1e-8
		decay, step, bc2 := cuda.AdamWConsts(7, 3e-4, b1, b2, 0.01)
		wp, wm, wv := slices.Clone(p0), slices.Clone(m0), slices.Clone(v0)
		cuda.AdamWRef(wp, wm, wv, g0, b1, b2, eps, decay, step, bc2)
		gr, b := linear(n)
		name := "adamw n=5003 (bit-exact)"
		if c.launch(name, "adamw", gr, b, p, m, v, g, int64(n), f64(b1), f64(b2), f64(eps), f64(decay), f64(step), f64(bc2)) {
			c.exact(name, "p", p.floats(cuda.F32), wp)
			c.exact(name, "m", m.floats(cuda.F32), wm)
			c.exact(name, "v", v.floats(cuda.F32), wv)
		}
	}
	const n = 100_003
	g0 := c.randn(n)
	g, _ := in(g0, cuda.F32)
	const k = 0.123456789
	want := slices.Clone(g0)
	cuda.ScaleRef(want, k)
	gr, b := linear(n)
	if c.launch("scale_f32 n=100003 (bit-exact)", "scale_f32", gr, b, g, int64(n), f64(k)) {
		c.exact("scale_f32 n=100003 (bit-exact)", "g", g.floats(cuda.F32), want)
	}
	const sumSqBlocks = 256
	g, _ = in(g0, cuda.F32)
	part := out(2*sumSqBlocks, cuda.F32) // doubles
	total := out(2, cuda.F32)
	name := "sumsq n=100003"
	if c.launch(name, "sumsq_partial", Dim{sumSqBlocks, 1, 1}, Dim{threads, 1, 1}, part, g, int64(n)) &&
		c.launch(name, "sum_partials", Dim{1, 1, 1}, Dim{threads, 1, 1}, total, part, sumSqBlocks) {
		got := math.Float64frombits(binary.LittleEndian.Uint64(total.Data))
		ws := cuda.SumSqRef(g0)
		if rel := math.Abs(got-ws) / ws; !(rel <= 1e-12) {
			c.fail(name, fmt.Errorf("sum of squares %v, want %v", got, ws))
		}
	}
}

// dequantInt8 runs dequant_int8 on a [37, 129] int8 weight (the full range
// -127..127 and both ends, rows*cols not a multiple of the block) with
// per-row scales; the storage-type result must equal DequantInt8Ref bit for
// bit, since both are one float product rounded once.
func (c *suite) dequantInt8() {
	const rows, cols = 37, 129
	q := make([]int8, rows*cols)
	raw := make([]byte, rows*cols)
	for i := range q {
		q[i] = int8(c.r.IntN(255) - 127)
	}
	q[0], q[1] = 127, -127
	for i, v := range q {
		raw[i] = byte(v)
	}
	scale := make([]float32, rows)
	for r := range scale {
		scale[r] = float32(c.r.ExpFloat64()) / 127
	}
	sb, _ := in(scale, cuda.F32)
	o := out(rows*cols, c.e)
	gr, b := linear(rows * cols)
	name := "dequant_int8 37x129 (bit-exact)"
	if c.launch(name, "dequant_int8", gr, b, o, &Buf{Data: raw}, sb, rows, cols) {
		c.exact(name, "out", o.floats(c.e), cuda.DequantInt8Ref(q, scale, rows, cols, c.e))
	}
}

// exact requires got and want to have the same bits.
func (c *suite) exact(name, tensor string, got, want []float32) {
	if len(got) != len(want) {
		c.fail(name, fmt.Errorf("%s: %d values, want %d", tensor, len(got), len(want)))
		return
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			c.fail(name, fmt.Errorf("%s[%d]: got %v, want %v (bits differ)", tensor, i, got[i], want[i]))
			return
		}
	}
}

// conversions checks the kernels' ld and st against the host's conversions
// bit for bit: ld through embed_gather over every 16-bit pattern, st
// through cast_elem over special values, rounding ties, the subnormal and
// overflow boundaries and random bit patterns.
func (c *suite) conversions() {
	e := c.e
	if e == cuda.F32 {
		return
	}
	const all = 1 << 16
	table := make([]byte, 2*all)
	ids := make([]int, all)
	for i := range ids {
		binary.LittleEndian.PutUint16(table[2*i:], uint16(i))
		ids[i] = i
	}
	o := out(all, cuda.F32)
	g, b := linear(all)
	if c.launch("ld over all 65536 bit patterns", "embed_gather", g, b, o, &Buf{Data: table}, ints(ids), all, 1, all) {
		c.exact("ld over all 65536 bit patterns", "out", o.floats(cuda.F32), e.Decode(table))
	}
	var v []float32
	for _, u := range []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 1, 0x80000001, 0x7f7fffff} {
		v = append(v, math.Float32frombits(u))
	}
	for _, x := range []float64{65504, 65519.99, 65520, 65536, 6.103515625e-05, 6.0975552e-05, 5.960464477539063e-08,
		2.9802322387695312e-08, 2.98023224e-08, 2.9802326e-08, 1e-10, 1 + 1.0/2048, 1 + 3.0/2048, 1 + 1.0/256, 1 + 3.0/256, 3.3895314e38} {
		v = append(v, float32(x), float32(-x))
	}
	for range 50_000 {
		v = append(v, math.Float32frombits(c.r.Uint32()))
	}
	for range 20_000 { // the half range, with the low bits that decide the rounding
		v = append(v, float32(c.r.NormFloat64()*math.Pow(2, float64(c.r.IntN(40)-24))))
	}
	x := &Buf{Data: cuda.F32.Encode(v)}
	o = out(len(v), e)
	g, b = linear(int64(len(v)))
	if c.launch("st over special and random floats", "cast_elem", g, b, o, x, int64(len(v))) {
		want := e.Encode(v)
		for i := 0; i < len(v); i++ {
			if o.Data[2*i] != want[2*i] || o.Data[2*i+1] != want[2*i+1] {
				c.fail("st over special and random floats", fmt.Errorf("st(%v = %#08x) = %#04x, host gives %#04x", v[i], math.Float32bits(v[i]),
					binary.LittleEndian.Uint16(o.Data[2*i:]), binary.LittleEndian.Uint16(want[2*i:])))
				break
			}
		}
	}
}
