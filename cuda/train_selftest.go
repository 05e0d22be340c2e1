//go:build rellagpu

package cuda

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/rella-project/rella/model"
)

// CheckTrainKernels runs every training kernel (and the LoRA and
// cross-entropy GEMM compositions) on d with fresh random inputs drawn from
// seed, for F32 and for the device's half type, against the CPU references
// of train_ref.go, with the tolerances of CheckKernels. Outputs are poisoned
// with NaN first; outputs a kernel adds into start from random values, so an
// element it skips keeps its start value and fails. The dropout masks and
// AdamW must match their references exactly.
func CheckTrainKernels(ctx context.Context, d *Device, seed uint64) ([]CheckResult, error) {
	return runChecks(ctx, d, seed, 0x7a11, (*checker).train)
}

// backend is the training step's device backend over the checker's kernels.
func (c *checker) backend() deviceBackend {
	return deviceBackend{d: c.d, o: c.o, blas: c.blas, e: c.e}
}

// raw uploads bytes into a new buffer.
func (c *checker) raw(b []byte) Buffer {
	if c.fatal != nil {
		return Buffer{}
	}
	buf, err := c.d.Alloc(int64(max(len(b), 1)))
	if err == nil {
		err = c.d.Upload(buf, b)
	}
	if err != nil {
		c.fatal = err
	}
	c.bufs = append(c.bufs, buf)
	return buf
}

// download reads n values of type t (nil after a failure).
func (c *checker) download(b Buffer, n int, t Elem) []float32 {
	if c.fatal != nil {
		return nil
	}
	v, err := c.d.downloadFloats(b, n, t)
	if err != nil {
		c.fatal = err
	}
	return v
}

// check runs launch and then verify (which downloads and compares), and
// records one result; like compare, it frees the buffers of the case.
func (c *checker) check(name string, launch func() error, verify func() (float64, error)) {
	defer func() {
		for _, b := range c.bufs {
			c.d.Free(b)
		}
		c.bufs = nil
	}()
	if c.fatal != nil {
		return
	}
	if err := launch(); err != nil {
		c.fatal = fmt.Errorf("%s (%v): %w", name, c.e, err)
		return
	}
	rel, err := verify()
	if c.fatal != nil {
		c.fatal = fmt.Errorf("%s (%v): %w", name, c.e, c.fatal)
		return
	}
	c.results = append(c.results, CheckResult{Name: name, Elem: c.e, RelErr: rel, Err: err})
}

// near compares got with want at the tolerance of type t (F32 or half) and
// in relative norm; it returns the relative error.
func (c *checker) near(tensor string, got, want []float32, t Elem) (float64, error) {
	atol, rtol := ATolF32, RTolF32
	if t != F32 || c.e != F32 {
		atol, rtol = ATolHalf, RTolHalf
	}
	rel := RelErr(got, want)
	if err := Compare(tensor, got, want, atol, rtol); err != nil {
		return rel, err
	}
	if !(rel <= rtol) {
		return rel, fmt.Errorf("%s: relative error %.3g above %g", tensor, rel, rtol)
	}
	return rel, nil
}

// all2 joins two comparisons: the larger relative error, both errors.
func all2(r1 float64, e1 error, r2 float64, e2 error) (float64, error) {
	return max(r1, r2), errors.Join(e1, e2)
}

func (c *checker) train() {
	e := c.e
	{ // cast_elem
		const n = 1001
		x, xR := c.in(c.randn(n), F32)
		out := c.out(n, e)
		c.compare("cast_elem n=1001", out, e, e.Round(xR), func() error { return c.o.castElem(out, x, n) })
	}
	for _, d := range []int{64, 4096} { // rmsnorm_bwd adds into dx
		const n = 13
		x, xR := c.in(c.randn(n*d), F32)
		w, wR := c.in(c.randn(d), e)
		dy, dyR := c.in(c.randn(n*d), F32)
		dx0 := c.randn(n * d)
		dx, _ := c.in(dx0, F32)
		want := ResidualAddRef(dx0, RMSNormBwdRef(xR, wR, dyR, n, d, 1e-5))
		c.compare(fmt.Sprintf("rmsnorm_bwd n=%d d=%d (adds)", n, d), dx, F32, want,
			func() error { return c.o.rmsnormBwd(dx, dy, x, w, n, d, 1e-5) })
	}
	for _, hd := range []int{8, 128} { // rope_bwd in place
		const heads = 4
		cu := Offsets([]int{3, 17, 40})
		n := cu[len(cu)-1]
		pos := Positions(cu)
		x, xR := c.in(c.randn(n*heads*hd), e)
		pb := c.ints(pos)
		c.compare(fmt.Sprintf("rope_bwd n=%d heads=%d hd=%d", n, heads, hd), x, e, RoPEBwdRef(xR, pos, heads, hd, 10000),
			func() error { return c.o.ropeBwd(x, pb, n, heads, hd, 10000) })
	}
	for _, s := range []struct {
		lens      []int
		H, KV, hd int
	}{{[]int{1, 7, 33, 70}, 8, 2, 64}, {[]int{130}, 4, 4, 128}, {[]int{5, 40}, 8, 4, 8}, {[]int{9, 64, 65}, 6, 3, 80}} {
		c.attentionTrain(s.lens, s.H, s.KV, s.hd)
	}
	{ // swiglu_bwd
		const n = 10007
		g, gR := c.in(c.randn(n), e)
		u, uR := c.in(c.randn(n), e)
		dy, dyR := c.in(c.randn(n), e)
		dg, du := c.out(n, e), c.out(n, e)
		wg, wu := SwiGLUBwdRef(gR, uR, dyR)
		c.check("swiglu_bwd n=10007", func() error { return c.o.swigluBwd(dg, du, g, u, dy, n) }, func() (float64, error) {
			r1, e1 := c.near("dg", c.download(dg, n, e), wg, e)
			r2, e2 := c.near("du", c.download(du, n, e), wu, e)
			return all2(r1, e1, r2, e2)
		})
	}
	for _, dc := range []struct {
		first, n int64
		p        float64
	}{{0, 5000, 0.1}, {1_000_003, 777, 0.05}, {64, 129, 0}} { // dropout_mask: exact
		seed, stream := c.r.Uint64(), uint64(c.r.IntN(300)+1)
		want := DropoutKeepRef(seed, stream, dc.first, dc.n, dc.p)
		keep := c.raw(make([]byte, dc.n))
		c.check(fmt.Sprintf("dropout_mask first=%d n=%d p=%g (exact)", dc.first, dc.n, dc.p),
			func() error { return c.o.dropoutMask(keep, seed, stream, dc.first, dc.n, dc.p) },
			func() (float64, error) {
				got := make([]byte, dc.n)
				if err := c.d.Download(got, keep); err != nil {
					c.fatal = err
					return 0, nil
				}
				bad := 0
				for i := range got {
					if got[i] != want[i] {
						bad++
					}
				}
				if bad > 0 {
					return float64(bad) / float64(dc.n), fmt.Errorf("keep: %d of %d flags differ from cpu.DropoutMasks' draws", bad, dc.n)
				}
				return 0, nil
			})
	}
	{ // dropout_apply and mask_mul_add
		const n, p = 4099, 0.25
		keepFlags := DropoutKeepRef(c.r.Uint64(), 1, 0, n, p)
		mask := make([]float32, n)
		for i, k := range keepFlags {
			mask[i] = float32(k) * keepScale(p)
		}
		x, xR := c.in(c.randn(n), e)
		keep := c.raw(keepFlags)
		out := c.out(n, e)
		want := make([]float32, n)
		for i := range want {
			want[i] = xR[i] * mask[i]
		}
		c.compare("dropout_apply n=4099 p=0.25", out, e, want, func() error { return c.o.dropoutApply(out, x, keep, n, p) })
		g, gR := c.in(c.randn(n), F32)
		keep = c.raw(keepFlags)
		dx0 := c.randn(n)
		dx, _ := c.in(dx0, F32)
		for i := range want {
			want[i] = dx0[i] + gR[i]*mask[i]
		}
		c.compare("mask_mul_add n=4099 p=0.25 (adds)", dx, F32, want, func() error { return c.o.maskMulAdd(dx, g, keep, n, p) })
	}
	{ // gather_rows, scatter_add_rows
		const N, d = 50, 96
		idx := []int{49, 0, 7, 8, 30}
		x, xR := c.in(c.randn(N*d), F32)
		ib := c.ints(idx)
		out := c.out(len(idx)*d, F32)
		var want []float32
		for _, i := range idx {
			want = append(want, xR[i*d:(i+1)*d]...)
		}
		c.compare("gather_rows R=5 d=96", out, F32, want, func() error { return c.o.gatherRows(out, x, ib, len(idx), d) })
		g, gR := c.in(c.randn(len(idx)*d), F32)
		ib = c.ints(idx)
		dx0 := c.randn(N * d)
		dx, _ := c.in(dx0, F32)
		want = append([]float32(nil), dx0...)
		for r, i := range idx {
			for k := 0; k < d; k++ {
				want[i*d+k] += gR[r*d+k]
			}
		}
		c.compare("scatter_add_rows R=5 d=96 (adds)", dx, F32, want, func() error { return c.o.scatterAddRows(dx, g, ib, len(idx), d) })
	}
	for _, p := range []float64{0, 0.1} {
		c.lora(37, 200, 8, 130, p)
	}
	for _, vc := range []int{128, 1000} {
		c.crossEntropy(6, 1000, 64, vc)
	}
	{ // adamw: bit-identical to AdamWRef (and so to trainer.AdamW)
		const n = 5003
		p0, m0, v0, g0 := c.randn(n), c.randn(n), c.randn(n), c.randn(n)
		for i := range v0 {
			v0[i] *= v0[i]
		}
		p, _ := c.in(p0, F32)
		m, _ := c.in(m0, F32)
		v, _ := c.in(v0, F32)
		g, _ := c.in(g0, F32)
		const b1, b2, eps = 0.9, 0.999, 1e-8
		decay, step, bc2 := AdamWConsts(7, 3e-4, b1, b2, 0.01)
		wp, wm, wv := append([]float32(nil), p0...), append([]float32(nil), m0...), append([]float32(nil), v0...)
		AdamWRef(wp, wm, wv, g0, b1, b2, eps, decay, step, bc2)
		c.check("adamw n=5003 (bit-exact)", func() error { return c.o.adamw(p, m, v, g, n, b1, b2, eps, decay, step, bc2) },
			func() (float64, error) {
				var errs []error
				for _, x := range []struct {
					name string
					b    Buffer
					want []float32
				}{{"p", p, wp}, {"m", m, wm}, {"v", v, wv}} {
					got := c.download(x.b, n, F32)
					if got == nil {
						return 0, nil
					}
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(x.want[i]) {
							errs = append(errs, fmt.Errorf("%s[%d]: got %v, want %v (bits differ)", x.name, i, got[i], x.want[i]))
							break
						}
					}
				}
				return 0, errors.Join(errs...)
			})
	}
	{ // scale_f32 (exact), sumsq_partial + sum_partials
		const n = 100_003
		g0 := c.randn(n)
		g, _ := c.in(g0, F32)
		const k = 0.123456789
		want := append([]float32(nil), g0...)
		ScaleRef(want, k)
		c.check("scale_f32 n=100003 (bit-exact)", func() error { return c.o.scaleF32(g, n, k) }, func() (float64, error) {
			got := c.download(g, n, F32)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					return 0, fmt.Errorf("g[%d]: got %v, want %v", i, got[i], want[i])
				}
			}
			return 0, nil
		})
		g, _ = c.in(g0, F32)
		out, part := c.out(2, F32), c.out(2*sumSqBlocks, F32) // doubles: 8 bytes each
		ws := SumSqRef(g0)
		c.check("sumsq n=100003", func() error { return c.o.sumSq(out, part, g, n) }, func() (float64, error) {
			raw := make([]byte, 8)
			if err := c.d.Download(raw, out); err != nil {
				c.fatal = err
				return 0, nil
			}
			got := math.Float64frombits(binary.LittleEndian.Uint64(raw))
			rel := math.Abs(got-ws) / ws
			if !(rel <= 1e-12) {
				return rel, fmt.Errorf("sum of squares %v, want %v", got, ws)
			}
			return rel, nil
		})
	}
	{ // dequant_int8: bit-exact against DequantInt8Ref (and so the CPU engine's int8 operand)
		const rows, cols = 67, 301
		w := c.randn(rows * cols)
		for i := range w {
			w[i] *= 0.02
		}
		q, err := model.QuantizeInt8(w, rows, cols)
		if err != nil {
			c.fatal = err
			return
		}
		qb := c.raw(int8Bytes(q.Q))
		sb, _ := c.in(q.Scale, F32)
		out := c.out(rows*cols, c.e)
		want := DequantInt8Ref(q.Q, q.Scale, rows, cols, c.e)
		c.check(fmt.Sprintf("dequant_int8 %dx%d (bit-exact)", rows, cols), func() error { return c.o.dequantInt8(out, qb, sb, rows, cols) },
			func() (float64, error) {
				got := c.download(out, rows*cols, c.e)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						return 0, fmt.Errorf("w[%d]: got %v, want %v", i, got[i], want[i])
					}
				}
				return 0, nil
			})
	}
}

// attentionTrain checks attention_fwd (output and lse), attention_bwd_pre,
// attention_bwd_dq and attention_bwd_dkv on one packed shape. The backward
// kernels get lse and dd from the references (float), so that each is
// checked on its own.
func (c *checker) attentionTrain(lens []int, H, KV, hd int) {
	e := c.e
	cu := Offsets(lens)
	n, maxLen := cu[len(cu)-1], 0
	for _, l := range lens {
		maxLen = max(maxLen, l)
	}
	B := len(lens)
	shape := fmt.Sprintf("lens=%v H=%d KV=%d hd=%d", lens, H, KV, hd)
	qv, kv, vv, gv := c.randn(n*H*hd), c.randn(n*KV*hd), c.randn(n*KV*hd), c.randn(n*H*hd)
	qR, kR, vR, gR := e.Round(qv), e.Round(kv), e.Round(vv), e.Round(gv)
	oRef, lseRef := AttentionLSERef(qR, kR, vR, cu, H, KV, hd)
	{
		q, _ := c.in(qv, e)
		k, _ := c.in(kv, e)
		v, _ := c.in(vv, e)
		cb := c.ints(cu)
		o, lse := c.out(n*H*hd, e), c.out(n*H, F32)
		c.check("attention_fwd "+shape, func() error { return c.o.attentionFwd(o, lse, q, k, v, cb, B, maxLen, H, KV, hd) },
			func() (float64, error) {
				r1, e1 := c.near("o", c.download(o, n*H*hd, e), oRef, e)
				r2, e2 := c.near("lse", c.download(lse, n*H, F32), lseRef, e)
				return all2(r1, e1, r2, e2)
			})
	}
	{
		o, oR := c.in(oRef, e)
		g, _ := c.in(gv, e)
		dd := c.out(n*H, F32)
		c.compare("attention_bwd_pre "+shape, dd, F32, AttentionBwdPreRef(oR, gR, n, H, hd),
			func() error { return c.o.attentionBwdPre(dd, o, g, n, H, hd) })
	}
	ddRef := AttentionBwdPreRef(oRef, gR, n, H, hd)
	wq, wk, wv := AttentionBwdRef(qR, kR, vR, gR, cu, H, KV, hd)
	{
		q, _ := c.in(qv, e)
		k, _ := c.in(kv, e)
		v, _ := c.in(vv, e)
		g, _ := c.in(gv, e)
		lse, _ := c.in(lseRef, F32)
		dd, _ := c.in(ddRef, F32)
		cb := c.ints(cu)
		dq := c.out(n*H*hd, e)
		c.compare("attention_bwd_dq "+shape, dq, e, wq,
			func() error { return c.o.attentionBwdDQ(dq, q, k, v, g, lse, dd, cb, B, maxLen, H, KV, hd) })
	}
	{
		q, _ := c.in(qv, e)
		k, _ := c.in(kv, e)
		v, _ := c.in(vv, e)
		g, _ := c.in(gv, e)
		lse, _ := c.in(lseRef, F32)
		dd, _ := c.in(ddRef, F32)
		cb := c.ints(cu)
		dk, dv := c.out(n*KV*hd, e), c.out(n*KV*hd, e)
		c.check("attention_bwd_dkv "+shape, func() error { return c.o.attentionBwdDKV(dk, dv, q, k, v, g, lse, dd, cb, B, maxLen, H, KV, hd) },
			func() (float64, error) {
				r1, e1 := c.near("dk", c.download(dk, n*KV*hd, e), wk, e)
				r2, e2 := c.near("dv", c.download(dv, n*KV*hd, e), wv, e)
				return all2(r1, e1, r2, e2)
			})
	}
}

// lora checks loraFwdOn and loraBwdOn on the device (GEMMs, cast_elem of the float32
// weights, dropout_mask, dropout_apply, mask_mul_add) against LoRAFwdRef and
// LoRABwdRef.
func (c *checker) lora(n, in, r, out int, p float64) {
	e := c.e
	const scale = 2
	xv, av, bv, dyv := c.randn(n*in), c.randn(r*in), c.randn(out*r), c.randn(n*out)
	xR, aR, bR, dyR := e.Round(xv), e.Round(av), e.Round(bv), e.Round(dyv)
	seed := c.r.Uint64()
	var mask []float32
	if p > 0 {
		for _, k := range DropoutKeepRef(seed, 3, 0, int64(n*in), p) {
			mask = append(mask, float32(k)*keepScale(p))
		}
	}
	y0 := c.randn(n * out)
	y0R := e.Round(y0)
	wantY := ResidualAddRef(y0R, LoRAFwdRef(xR, aR, bR, mask, n, in, r, out, scale))
	da0, db0, dx0 := c.randn(r*in), c.randn(out*r), c.randn(n*in)
	wda, wdb, wdx := LoRABwdRef(xR, aR, bR, mask, dyR, n, in, r, out, scale)
	wda, wdb, wdx = ResidualAddRef(da0, wda), ResidualAddRef(db0, wdb), ResidualAddRef(dx0, wdx)

	x, _ := c.in(xv, e)
	a32, _ := c.in(av, F32)
	b32, _ := c.in(bv, F32)
	y, _ := c.in(y0, e)
	dy, _ := c.in(dyv, e)
	da, _ := c.in(da0, F32)
	db, _ := c.in(db0, F32)
	dx, _ := c.in(dx0, F32)
	ae, be := c.out(r*in, e), c.out(out*r, e)
	xd, u, du := c.out(n*in, e), c.out(n*r, e), c.out(n*r, e)
	dxd := c.out(n*in, F32)
	keep := c.raw(make([]byte, n*in))
	c.check(fmt.Sprintf("lora fwd+bwd n=%d in=%d r=%d out=%d p=%g (GEMMs, cast_elem, dropout_*, mask_mul_add)", n, in, r, out, p),
		func() error {
			if err := errors.Join(c.o.castElem(ae, a32, int64(r*in)), c.o.castElem(be, b32, int64(out*r))); err != nil {
				return err
			}
			if p > 0 {
				if err := c.o.dropoutMask(keep, seed, 3, 0, int64(n*in), p); err != nil {
					return err
				}
				if err := c.o.dropoutApply(xd, x, keep, int64(n*in), p); err != nil {
					return err
				}
			}
			in2 := xd // the adapter's input: dropped out, or x itself
			if p == 0 {
				in2 = x
			}
			bk := c.backend()
			if err := loraFwdOn[Buffer](bk, y, u, in2, ae, be, n, in, r, out, scale); err != nil {
				return err
			}
			return loraBwdOn[Buffer](bk, da, db, dx, du, dxd, dy, in2, u, ae, be, keep, n, in, r, out, scale, p)
		},
		func() (float64, error) {
			var errs []error
			worst := 0.0
			for _, o := range []struct {
				name string
				b    Buffer
				t    Elem
				want []float32
			}{{"y", y, e, wantY}, {"dA", da, F32, wda}, {"dB", db, F32, wdb}, {"dx", dx, F32, wdx}} {
				rel, err := c.near(o.name, c.download(o.b, len(o.want), o.t), o.want, o.t)
				worst = max(worst, rel)
				errs = append(errs, err)
			}
			return worst, errors.Join(errs...)
		})
}

// crossEntropy checks the chunked cross-entropy (GEMMs per vocabulary
// chunk, ce_stats, ce_finish, ce_grad) against CrossEntropyRef.
func (c *checker) crossEntropy(R, V, d, vc int) {
	e := c.e
	hv, wv := c.randn(R*d), c.randn(V*d)
	for i := range hv {
		hv[i] *= 0.2 // logits of order 1-3, as a trained model's
	}
	hR, wR := e.Round(hv), e.Round(wv)
	labels := make([]int, R)
	for i := range labels {
		labels[i] = c.r.IntN(V)
	}
	labels[0] = V - 1
	wantLoss, wantDh := CrossEntropyRef(hR, wR, labels, d, 1)
	dh0 := c.randn(R * d)
	wantDh = ResidualAddRef(dh0, wantDh)
	h, _ := c.in(hv, e)
	w, _ := c.in(wv, e)
	lb := c.ints(labels)
	dh, _ := c.in(dh0, F32)
	loss := c.out(R, F32)
	z, dz := c.out(R*vc, F32), c.out(R*vc, e)
	m, s, zlab, lse := c.out(R, F32), c.out(R, F32), c.out(R, F32), c.out(R, F32)
	want32 := make([]float32, R)
	for i, l := range wantLoss {
		want32[i] = float32(l)
	}
	c.check(fmt.Sprintf("cross-entropy R=%d V=%d d=%d chunk=%d (GEMMs, ce_stats, ce_finish, ce_grad)", R, V, d, vc),
		func() error {
			return crossEntropyOn[Buffer](c.backend(), loss, dh, h, w, lb, z, dz, m, s, zlab, lse, R, V, d, vc, 1)
		},
		func() (float64, error) {
			r1, e1 := c.near("loss", c.download(loss, R, F32), want32, e)
			r2, e2 := c.near("dh", c.download(dh, R*d, F32), wantDh, e)
			return all2(r1, e1, r2, e2)
		})
}
