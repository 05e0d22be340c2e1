//go:build rellagpu

package cuda

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math"
)

// Launchers of the training kernels in kernels/train.cu, and the GEMM
// compositions of the LoRA and cross-entropy passes. Like ops.go, each
// queues work on the device's stream (inside Do); train_ref.go says what
// each computes.

// view returns the part of b that starts off bytes in and holds n bytes.
func (b Buffer) view(off, n int64) (Buffer, error) {
	if off < 0 || n < 0 || off+n > b.size {
		return Buffer{}, fmt.Errorf("cuda: view [%d, %d) of a buffer of %d bytes", off, off+n, b.size)
	}
	return Buffer{ptr: b.ptr + C.CUdeviceptr(off), size: n, cap: n}, nil
}

func (o ops) castElem(out, x Buffer, n int64) error {
	return o.d.launch(o.m.fn(kCastElem), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, out, x, n)
}

// rmsnormBwd adds the gradient of rmsnorm's input into dx (float [n, d]).
func (o ops) rmsnormBwd(dx, dy, x, w Buffer, n, d int, eps float64) error {
	return o.d.launch(o.m.fn(kRMSNormBwd), dim3{uint32(n), 1, 1}, dim3{threads, 1, 1}, 0, dx, dy, x, w, n, d, float32(eps))
}

func (o ops) ropeBwd(x, pos Buffer, n, heads, hd int, theta float64) error {
	if hd%2 != 0 {
		return fmt.Errorf("cuda: rope_bwd: head dim %d is odd", hd)
	}
	return o.d.launch(o.m.fn(kRoPEBwd), dim3{blocks(int64(n) * int64(heads) * int64(hd/2)), 1, 1}, dim3{threads, 1, 1}, 0,
		x, pos, n, heads, hd, float32(theta))
}

// attnShape checks an attention shape and returns the score scale.
func attnShape(name string, H, KV, hd int) (float32, error) {
	if hd > MaxHeadDim || hd <= 0 {
		return 0, fmt.Errorf("cuda: %s: head dim %d outside 1..%d", name, hd, MaxHeadDim)
	}
	if KV <= 0 || H%KV != 0 {
		return 0, fmt.Errorf("cuda: %s: %d heads are not a multiple of %d kv heads", name, H, KV)
	}
	return float32(1 / math.Sqrt(float64(hd))), nil
}

// attentionFwd is attention that also writes lse (float [N, H]).
func (o ops) attentionFwd(out, lse, q, k, v, cu Buffer, B, maxLen, H, KV, hd int) error {
	scale, err := attnShape(kAttentionFwd, H, KV, hd)
	if err != nil {
		return err
	}
	return o.d.launch(o.m.fn(kAttentionFwd), dim3{uint32((maxLen + attQT - 1) / attQT), uint32(B), uint32(H)},
		dim3{attQT * 32, 1, 1}, 0, out, lse, q, k, v, cu, H, KV, hd, scale)
}

// attentionBwdPre writes dd (float [n, H]) = rowsum(dout ∘ o) per head.
func (o ops) attentionBwdPre(dd, out, dout Buffer, n, H, hd int) error {
	warps := int64(n) * int64(H)
	return o.d.launch(o.m.fn(kAttentionBwdPre), dim3{uint32((warps*32 + threads - 1) / threads), 1, 1}, dim3{threads, 1, 1}, 0,
		dd, out, dout, n, H, hd)
}

func (o ops) attentionBwdDQ(dq, q, k, v, dout, lse, dd, cu Buffer, B, maxLen, H, KV, hd int) error {
	scale, err := attnShape(kAttentionBwdDQ, H, KV, hd)
	if err != nil {
		return err
	}
	return o.d.launch(o.m.fn(kAttentionBwdDQ), dim3{uint32((maxLen + attQT - 1) / attQT), uint32(B), uint32(H)},
		dim3{attQT * 32, 1, 1}, 0, dq, q, k, v, dout, lse, dd, cu, H, KV, hd, scale)
}

func (o ops) attentionBwdDKV(dk, dv, q, k, v, dout, lse, dd, cu Buffer, B, maxLen, H, KV, hd int) error {
	scale, err := attnShape(kAttentionBwdDKV, H, KV, hd)
	if err != nil {
		return err
	}
	return o.d.launch(o.m.fn(kAttentionBwdDKV), dim3{uint32((maxLen + attQT - 1) / attQT), uint32(B), uint32(KV)},
		dim3{attQT * 32, 1, 1}, 0, dk, dv, q, k, v, dout, lse, dd, cu, H, KV, hd, scale)
}

func (o ops) swigluBwd(dg, du, g, u, dy Buffer, n int64) error {
	return o.d.launch(o.m.fn(kSwiGLUBwd), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, dg, du, g, u, dy, n)
}

// dropoutMask writes the keep flags (bytes) of draws first .. first+n-1 of
// PCG(seed, stream) for dropout probability p (see DropoutKeepRef).
func (o ops) dropoutMask(keep Buffer, seed, stream uint64, first, n int64, p float64) error {
	if !(p >= 0 && p < 1) {
		return fmt.Errorf("cuda: dropout probability %g outside [0, 1)", p)
	}
	th := (n + dropRun - 1) / dropRun
	return o.d.launch(o.m.fn(kDropoutMask), dim3{blocks(th), 1, 1}, dim3{threads, 1, 1}, 0,
		keep, int64(seed), int64(stream), first, n, DropoutThreshold(p))
}

// keepScale is the inverted-dropout factor as the CPU engine applies it in float32.
func keepScale(p float64) float32 { return float32(1 / (1 - p)) }

func (o ops) dropoutApply(out, x, keep Buffer, n int64, p float64) error {
	return o.d.launch(o.m.fn(kDropoutApply), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, out, x, keep, n, keepScale(p))
}

func (o ops) maskMulAdd(dx, g, keep Buffer, n int64, p float64) error {
	return o.d.launch(o.m.fn(kMaskMulAdd), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, dx, g, keep, n, keepScale(p))
}

func (o ops) gatherRows(out, x, idx Buffer, R, d int) error {
	return o.d.launch(o.m.fn(kGatherRows), dim3{blocks(int64(R) * int64(d)), 1, 1}, dim3{threads, 1, 1}, 0, out, x, idx, R, d)
}

func (o ops) scatterAddRows(dx, g, idx Buffer, R, d int) error {
	return o.d.launch(o.m.fn(kScatterAddRows), dim3{blocks(int64(R) * int64(d)), 1, 1}, dim3{threads, 1, 1}, 0, dx, g, idx, R, d)
}

func (o ops) ceStats(m, s, zlab, z, labels Buffer, R, vc, v0 int) error {
	return o.d.launch(o.m.fn(kCEStats), dim3{uint32(R), 1, 1}, dim3{threads, 1, 1}, 0, m, s, zlab, z, labels, R, vc, v0)
}

func (o ops) ceFinish(lse, loss, m, s, zlab Buffer, R int) error {
	return o.d.launch(o.m.fn(kCEFinish), dim3{blocks(int64(R)), 1, 1}, dim3{threads, 1, 1}, 0, lse, loss, m, s, zlab, R)
}

func (o ops) ceGrad(dz, z, lse, labels Buffer, R, vc, v0 int, scale float32) error {
	return o.d.launch(o.m.fn(kCEGrad), dim3{blocks(int64(R) * int64(vc)), 1, 1}, dim3{threads, 1, 1}, 0,
		dz, z, lse, labels, R, vc, v0, scale)
}

// f64 passes a float64 to a kernel as the bits of a long long.
func f64(x float64) int64 { return int64(math.Float64bits(x)) }

// adamw applies one AdamW step to n float32 parameters with the constants
// of AdamWConsts.
func (o ops) adamw(p, m, v, g Buffer, n int64, beta1, beta2, eps, decay, step, bc2 float64) error {
	return o.d.launch(o.m.fn(kAdamW), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0,
		p, m, v, g, n, f64(beta1), f64(beta2), f64(eps), f64(decay), f64(step), f64(bc2))
}

func (o ops) scaleF32(g Buffer, n int64, c float64) error {
	return o.d.launch(o.m.fn(kScaleF32), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, g, n, f64(c))
}

// sumSqBlocks is the fixed grid of sumsq_partial (so the sum is deterministic).
const sumSqBlocks = 256

// sumSq writes Σ g² (double) into out[0], using part (sumSqBlocks doubles).
func (o ops) sumSq(out, part, g Buffer, n int64) error {
	if err := o.d.launch(o.m.fn(kSumSqPartial), dim3{sumSqBlocks, 1, 1}, dim3{threads, 1, 1}, 0, part, g, n); err != nil {
		return err
	}
	return o.d.launch(o.m.fn(kSumPartials), dim3{1, 1, 1}, dim3{threads, 1, 1}, 0, out, part, sumSqBlocks)
}

// gemmRM computes, in row-major terms, C [m, n] = alpha op(A) op(B) + beta C,
// where A is [m, k] ([k, m] when transA) and B is [k, n] ([n, k] when
// transB); the leading dimensions follow from the shapes. (cuBLAS is
// column-major: it computes Cᵀ = op(B)ᵀ op(A)ᵀ.)
func gemmRM(b *BLAS, transA, transB bool, m, n, k int, alpha float32, a, bm Mat, beta float32, c Mat) error {
	a.LD, bm.LD, c.LD = k, n, n
	if transA {
		a.LD = m
	}
	if transB {
		bm.LD = k
	}
	return b.GemmEx(transB, transA, n, m, k, alpha, bm, a, beta, c)
}

// loraFwd adds an adapter's output to y (elem [n, out]): u = xd Aᵀ (elem
// [n, r], kept for the backward pass), y += scale · u Bᵀ. xd is the module
// input after dropout (elem [n, in]); a and b are the elem copies of A [r, in]
// and B [out, r] (castElem of the float32 master weights).
func loraFwd(bl *BLAS, e Elem, y, u, xd, a, b Buffer, n, in, r, out int, scale float32) error {
	if err := gemmRM(bl, false, true, n, r, in, 1, Mat{Buf: xd, Type: e}, Mat{Buf: a, Type: e}, 0, Mat{Buf: u, Type: e}); err != nil {
		return err
	}
	return gemmRM(bl, false, true, n, out, r, scale, Mat{Buf: u, Type: e}, Mat{Buf: b, Type: e}, 1, Mat{Buf: y, Type: e})
}

// loraBwd accumulates an adapter's gradients from dy (elem [n, out]):
// dB += scale · dyᵀ u, du = scale · dy B (elem scratch [n, r]),
// dA += duᵀ xd, and the input's gradient dx (float [n, in]) += keep ∘ du A ·
// 1/(1−p), through dxd (float scratch [n, in]) when there is dropout
// (keep and dxd unused when p is 0). dA and dB are float32 [r, in], [out, r].
func (o ops) loraBwd(bl *BLAS, da, db, dx, du, dxd, dy, xd, u, a, b, keep Buffer, n, in, r, out int, scale float32, p float64) error {
	e := o.m.Elem
	if err := gemmRM(bl, true, false, out, r, n, scale, Mat{Buf: dy, Type: e}, Mat{Buf: u, Type: e}, 1, Mat{Buf: db, Type: F32}); err != nil {
		return err
	}
	if err := gemmRM(bl, false, false, n, r, out, scale, Mat{Buf: dy, Type: e}, Mat{Buf: b, Type: e}, 0, Mat{Buf: du, Type: e}); err != nil {
		return err
	}
	if err := gemmRM(bl, true, false, r, in, n, 1, Mat{Buf: du, Type: e}, Mat{Buf: xd, Type: e}, 1, Mat{Buf: da, Type: F32}); err != nil {
		return err
	}
	if p == 0 {
		return gemmRM(bl, false, false, n, in, r, 1, Mat{Buf: du, Type: e}, Mat{Buf: a, Type: e}, 1, Mat{Buf: dx, Type: F32})
	}
	if err := gemmRM(bl, false, false, n, in, r, 1, Mat{Buf: du, Type: e}, Mat{Buf: a, Type: e}, 0, Mat{Buf: dxd, Type: F32}); err != nil {
		return err
	}
	return o.maskMulAdd(dx, dxd, keep, int64(n)*int64(in), p)
}

// crossEntropy computes the loss of the R labelled rows h (elem [R, d])
// against the LM head w (elem [V, d]) over vocabulary chunks of vc rows,
// and adds the gradient of scale · Σ loss with respect to h into dh (float
// [R, d]). Scratch: z (float [R, vc]), dz (elem [R, vc]), m, s, zlab, lse,
// loss (float [R]). The per-row losses are left in loss.
func (o ops) crossEntropy(bl *BLAS, loss, dh, h, w, labels, z, dz, m, s, zlab, lse Buffer, R, V, d, vc int, scale float32) error {
	e := o.m.Elem
	logits := func(v0, nc int) error {
		wc, err := w.view(int64(v0)*int64(d)*int64(e.Size()), int64(nc)*int64(d)*int64(e.Size()))
		if err != nil {
			return err
		}
		return gemmRM(bl, false, true, R, nc, d, 1, Mat{Buf: h, Type: e}, Mat{Buf: wc, Type: e}, 0, Mat{Buf: z, Type: F32})
	}
	for v0 := 0; v0 < V; v0 += vc {
		nc := min(vc, V-v0)
		if err := logits(v0, nc); err != nil {
			return err
		}
		if err := o.ceStats(m, s, zlab, z, labels, R, nc, v0); err != nil {
			return err
		}
	}
	if err := o.ceFinish(lse, loss, m, s, zlab, R); err != nil {
		return err
	}
	for v0 := 0; v0 < V; v0 += vc {
		nc := min(vc, V-v0)
		if err := logits(v0, nc); err != nil {
			return err
		}
		if err := o.ceGrad(dz, z, lse, labels, R, nc, v0, scale); err != nil {
			return err
		}
		wc, err := w.view(int64(v0)*int64(d)*int64(e.Size()), int64(nc)*int64(d)*int64(e.Size()))
		if err != nil {
			return err
		}
		if err := gemmRM(bl, false, false, R, d, nc, 1, Mat{Buf: dz, Type: e}, Mat{Buf: wc, Type: e}, 1, Mat{Buf: dh, Type: F32}); err != nil {
			return err
		}
	}
	return nil
}
