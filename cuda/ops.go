//go:build rellagpu

package cuda

import (
	"fmt"
	"math"
)

// Launchers of the kernels in kernels/llama.cu: each computes the grid for
// its kernel and queues it on the device's stream (inside Do). Shapes are in
// elements; see ref.go for what each computes.

const threads = 256

func blocks(n int64) uint32 { return uint32((n + threads - 1) / threads) }

// ops binds a device and the kernels compiled for one storage type.
type ops struct {
	d *Device
	m *Module
}

func (o ops) embed(out, table, ids Buffer, n, d, vocab int) error {
	return o.d.launch(o.m.fn(kEmbedGather), dim3{blocks(int64(n) * int64(d)), 1, 1}, dim3{threads, 1, 1}, 0,
		out, table, ids, n, d, vocab)
}

func (o ops) rmsnorm(out, x, w Buffer, n, d int, eps float64) error {
	return o.d.launch(o.m.fn(kRMSNorm), dim3{uint32(n), 1, 1}, dim3{threads, 1, 1}, 0, out, x, w, n, d, float32(eps))
}

func (o ops) rope(x, pos Buffer, n, heads, hd int, theta float64) error {
	if hd%2 != 0 {
		return fmt.Errorf("cuda: rope: head dim %d is odd", hd)
	}
	return o.d.launch(o.m.fn(kRoPE), dim3{blocks(int64(n) * int64(heads) * int64(hd/2)), 1, 1}, dim3{threads, 1, 1}, 0,
		x, pos, n, heads, hd, float32(theta))
}

func (o ops) attention(out, q, k, v, cu Buffer, B, maxLen, H, KV, hd int) error {
	if hd > MaxHeadDim || hd <= 0 {
		return fmt.Errorf("cuda: attention: head dim %d outside 1..%d", hd, MaxHeadDim)
	}
	if KV <= 0 || H%KV != 0 {
		return fmt.Errorf("cuda: attention: %d heads are not a multiple of %d kv heads", H, KV)
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	return o.d.launch(o.m.fn(kAttention), dim3{uint32((maxLen + attQT - 1) / attQT), uint32(B), uint32(H)},
		dim3{attQT * 32, 1, 1}, 0, out, q, k, v, cu, H, KV, hd, scale)
}

func (o ops) swiglu(out, g, u Buffer, n int64) error {
	return o.d.launch(o.m.fn(kSwiGLU), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, out, g, u, n)
}

func (o ops) residualAdd(x, y Buffer, n int64) error {
	return o.d.launch(o.m.fn(kResidualAdd), dim3{blocks(n), 1, 1}, dim3{threads, 1, 1}, 0, x, y, n)
}

func (o ops) gatherLast(out, x, cu Buffer, B, d int) error {
	return o.d.launch(o.m.fn(kGatherLast), dim3{blocks(int64(B) * int64(d)), 1, 1}, dim3{threads, 1, 1}, 0, out, x, cu, B, d)
}

func (o ops) lmHeadRows(out, h, w, rows Buffer, B, R, d int) error {
	warps := int64(B) * int64(R)
	return o.d.launch(o.m.fn(kLMHeadRows), dim3{uint32((warps*32 + threads - 1) / threads), 1, 1}, dim3{threads, 1, 1}, 0,
		out, h, w, rows, B, R, d)
}

func (o ops) meanPool(out, h, cu Buffer, B, d int) error {
	return o.d.launch(o.m.fn(kMeanPool), dim3{blocks(int64(d)), uint32(B), 1}, dim3{threads, 1, 1}, 0, out, h, cu, B, d)
}
