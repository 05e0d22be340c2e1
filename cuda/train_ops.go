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

// Launchers of the training kernels in kernels/train.cu. Like ops.go, each
// queues work on the device's stream (inside Do); train_ref.go says what
// each computes. The LoRA and cross-entropy compositions are in
// train_step.go (loraFwdOn, loraBwdOn, crossEntropyOn), over deviceBackend.

// view returns the part of b that starts off bytes in and holds n bytes.
func (b Buffer) view(off, n int64) (Buffer, error) {
	if off < 0 || n < 0 || off+n > b.size {
		return Buffer{}, fmt.Errorf("cuda: view [%d, %d) of a buffer of %d bytes", off, off+n, b.size)
	}
	return Buffer{ptr: b.ptr + C.CUdeviceptr(off), size: n, cap: n}, nil
}

// dequantInt8 writes the [rows, cols] int8 weight q with float32 per-row
// scales into out in the storage type (dequant_int8).
func (o ops) dequantInt8(out, q, scale Buffer, rows, cols int) error {
	n := int64(rows) * int64(cols)
	return o.d.launch(o.m.fn(kDequantInt8), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, out, q, scale, rows, cols)
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
