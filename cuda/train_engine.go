//go:build rellagpu

package cuda

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

var _ engine.LossScaler = (*Trainer)(nil)

// Trainer is the GPU engine with LoRA adapters: engine.Trainer. The frozen
// base lives on the device as in Engine; the adapters' float32 values stay
// on the host (the optimiser updates Param.Value there) and are copied to
// the device in the storage type at each call; their gradients are computed
// on the device in float32 and added into Param.Grad.
//
// LossGrad (the algorithm is in train_step.go, shared with a host backend
// that tests it) packs the batch like the forward pass, keeps each layer's
// float input, computes the loss at the labelled rows only (cross-entropy
// over vocabulary chunks), and goes back through the layers recomputing each
// one from its input (one layer's activations live at a time). LoRA dropout
// masks are drawn on the device and equal cpu.DropoutMasks'.
//
// UNVERIFIED ON A DEVICE: the kernels and this code have been compiled, and
// the step's algorithm has run on the host backend, but nothing has run on
// a GPU yet; see cuda/README.md for the checks that remain.
type Trainer struct {
	*Engine
	opts TrainOptions
	st   *stepper[Buffer]
}

// NewTrainer loads m onto the GPU (as NewEngineWith) with the adapters of opts.
func NewTrainer(m *model.Model, opts TrainOptions, log *slog.Logger) (*Trainer, error) {
	if !(opts.Dropout >= 0 && opts.Dropout < 1) {
		return nil, fmt.Errorf("cuda: lora dropout %g, want [0, 1)", opts.Dropout)
	}
	specs, err := parseLoRA(m.Config, opts.Params)
	if err != nil {
		return nil, err
	}
	if opts.VocabChunk <= 0 {
		opts.VocabChunk = DefaultVocabChunk
	}
	reserve, err := TrainReserve(m.Config, opts)
	if err != nil {
		return nil, err
	}
	eo := opts.Options
	eo.Reserve += reserve // refused before any weight is uploaded when training cannot fit
	en, err := NewEngineWith(m, eo, log)
	if err != nil {
		return nil, err
	}
	tr := &Trainer{Engine: en, opts: opts}
	be := deviceBackend{d: en.dev, o: en.o, blas: en.blas, e: en.elem}
	st := &stepper[Buffer]{be: be, cfg: en.cfg, embed: en.embed, norm: en.norm, head: en.head,
		scale: opts.Scale, dropout: opts.Dropout, vocabChunk: opts.VocabChunk, maxTokens: opts.passTokens()}
	for _, l := range en.layers {
		st.layers = append(st.layers, stepLayer[Buffer]{ln1: l.ln1, q: l.q, k: l.k, v: l.v, o: l.o, ln2: l.ln2, gate: l.gate, up: l.up, down: l.down})
	}
	if en.quant != "" { // int8 projections: dequantised into the engine's buffer before each GEMM
		st.deq = en.deq
		for i := range en.layers {
			l := &en.layers[i]
			qs := map[string]quantWeight[Buffer]{}
			for _, pr := range l.projections() {
				in, out, err := moduleDims(en.cfg, pr.module)
				if err != nil {
					en.Close()
					return nil, err
				}
				qs[pr.module] = quantWeight[Buffer]{q: *pr.buf, scale: l.scales[pr.module], rows: out, cols: in}
			}
			st.quant = append(st.quant, qs)
		}
	}
	err = en.dev.Do(func() error {
		free, total, err := en.dev.MemInfo()
		if err != nil {
			return err
		}
		// A pass holds at most maxTokens tokens (a longer example runs alone
		// and may need more), all of them labelled in the worst case.
		labelled := st.maxTokens
		if opts.MaxLabelled > 0 {
			labelled = min(opts.MaxLabelled, st.maxTokens)
		}
		need := trainWorkspace(en.cfg, st.maxTokens, labelled, min(opts.VocabChunk, en.cfg.VocabSize), en.elem, specs)
		if need > free {
			return fmt.Errorf("cuda: training does not fit on device %d (%s): a pass of %d tokens needs %.2f GiB beyond the weights, %.2f GiB free of %.2f GiB; lower training.micro_batch_size (docs/memory.md)",
				en.dev.Index, en.dev.Name, st.maxTokens, gib(need), gib(free), gib(total))
		}
		st.mods, st.byKey, err = newStepMods[Buffer](be, specs)
		return err
	})
	if err != nil {
		en.Close()
		return nil, err
	}
	tr.st = st
	return tr, nil
}

// Params returns the LoRA parameters in the order given in TrainOptions.
func (tr *Trainer) Params() []*engine.Param { return tr.opts.Params }

// Close frees the adapters' buffers and the engine.
func (tr *Trainer) Close() error {
	if tr.Engine == nil || tr.dev == nil {
		return nil
	}
	tr.dev.Do(func() error {
		freeStepMods(tr.st.be, tr.st.mods)
		return nil
	})
	return tr.Engine.Close()
}

// LossGrad runs forward and backward over batch in training mode (LoRA
// dropout from dropoutSeed, as cpu.DropoutMasks draws it) and adds the
// gradient of the summed cross-entropy over the labelled tokens into each
// Param.Grad. It returns that sum and the number of labelled tokens.
func (tr *Trainer) LossGrad(ctx context.Context, batch []engine.Example, dropoutSeed uint64) (float64, int, error) {
	var lossSum float64
	var nTok int
	err := tr.dev.Do(func() error {
		var err error
		lossSum, nTok, err = tr.st.lossGrad(batch, dropoutSeed, ctx.Err)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return lossSum, nTok, nil
}

// SetLossScale makes the following LossGrad calls seed the backward pass
// with s (dynamic loss scaling, for fp16 storage): the gradients they add
// are s times the true ones and overflow to inf/NaN instead of underflowing.
func (tr *Trainer) SetLossScale(s float64) { tr.st.lossScale = s }

// LastLogits is Engine.LastLogits with the adapters applied (no dropout).
func (tr *Trainer) LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error) {
	for _, r := range rows {
		if r < 0 || r >= tr.cfg.VocabSize {
			return nil, fmt.Errorf("cuda: logits row %d outside vocabulary of %d", r, tr.cfg.VocabSize)
		}
	}
	return tr.runLoRA(ctx, seqs, func(x, cu Buffer, n, B int) ([]float32, int, error) { return tr.lastLogits(x, cu, B, rows) })
}

// MeanHidden is Engine.MeanHidden with the adapters applied (no dropout).
func (tr *Trainer) MeanHidden(ctx context.Context, seqs [][]int) ([][]float32, error) {
	return tr.runLoRA(ctx, seqs, func(x, cu Buffer, n, B int) ([]float32, int, error) { return tr.meanHidden(x, cu, n, B) })
}

// runLoRA is Engine.run through the adapters' forward pass.
func (tr *Trainer) runLoRA(ctx context.Context, seqs [][]int, head func(x, cu Buffer, n, B int) ([]float32, int, error)) ([][]float32, error) {
	lens := make([]int, len(seqs))
	for i, s := range seqs {
		if len(s) == 0 {
			return nil, fmt.Errorf("cuda: sequence %d is empty", i)
		}
		for _, id := range s {
			if id < 0 || id >= tr.cfg.VocabSize {
				return nil, fmt.Errorf("cuda: sequence %d: token id %d outside vocabulary of %d", i, id, tr.cfg.VocabSize)
			}
		}
		lens[i] = len(s)
	}
	out := make([][]float32, 0, len(seqs))
	err := tr.dev.Do(func() error {
		if err := tr.st.uploadAdapters(false); err != nil {
			return err
		}
		for _, c := range chunks(lens, tr.maxTokens) {
			if err := ctx.Err(); err != nil {
				return err
			}
			flat, width, err := tr.st.forward(seqs[c[0]:c[1]], head)
			if err != nil {
				return err
			}
			for i := 0; i < c[1]-c[0]; i++ {
				out = append(out, flat[i*width:(i+1)*width:(i+1)*width])
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// deviceBackend runs the training step's operations on the GPU: the
// kernels of train.cu and llama.cu, and cuBLAS (on the device thread).
type deviceBackend struct {
	d    *Device
	o    ops
	blas *BLAS
	e    Elem
}

var _ backend[Buffer] = deviceBackend{}

func (b deviceBackend) elem() Elem { return b.e }

// bytes is the size of n values of kind k.
func (b deviceBackend) bytes(n int, k bufKind) int64 {
	switch k {
	case kElem:
		return int64(n) * int64(b.e.Size())
	case kByte:
		return int64(n)
	}
	return int64(n) * 4
}

func (b deviceBackend) kindElem(k bufKind) Elem {
	if k == kElem {
		return b.e
	}
	return F32
}

func (b deviceBackend) alloc(n int, k bufKind) (Buffer, error) { return b.d.Alloc(b.bytes(n, k)) }

func (b deviceBackend) free(x Buffer) {
	if x.size > 0 {
		b.d.Free(x)
	}
}

func (b deviceBackend) zero(x Buffer, n int) error {
	if int64(n)*4 > x.size {
		return fmt.Errorf("cuda: zero of %d floats in a buffer of %d bytes", n, x.size)
	}
	return check("cuMemsetD32Async", C.r_cuMemsetD32Async(x.ptr, 0, C.size_t(n), b.d.stream))
}

func (b deviceBackend) uploadInts(v []int) (Buffer, error) { return b.d.uploadInts(v) }

func (b deviceBackend) upload(x Buffer, v []float32, k bufKind) error {
	return b.d.Upload(x, b.kindElem(k).encode(v))
}

func (b deviceBackend) download(x Buffer, n int) ([]float32, error) {
	return b.d.downloadFloats(x, n, F32)
}

func (b deviceBackend) copyFloats(dst, src Buffer, n int) error {
	m := int64(n) * 4
	if m > dst.size || m > src.size {
		return fmt.Errorf("cuda: copy of %d bytes between buffers of %d and %d", m, src.size, dst.size)
	}
	return check("cuMemcpyDtoDAsync", C.r_cuMemcpyDtoDAsync(dst.ptr, src.ptr, C.size_t(m), b.d.stream))
}

func (b deviceBackend) view(x Buffer, off, n int, k bufKind) (Buffer, error) {
	return x.view(b.bytes(off, k), b.bytes(n, k))
}

func (b deviceBackend) gemm(g GemmCall, left, right, c Buffer, ck bufKind) error {
	return b.blas.Run(g, Mat{Buf: left, Type: b.e}, Mat{Buf: right, Type: b.e}, Mat{Buf: c, Type: b.kindElem(ck)})
}

func (b deviceBackend) embed(x, table, ids Buffer, n, d, vocab int) error {
	return b.o.embed(x, table, ids, n, d, vocab)
}

func (b deviceBackend) rmsnorm(out, x, w Buffer, n, d int, eps float64) error {
	return b.o.rmsnorm(out, x, w, n, d, eps)
}

func (b deviceBackend) rmsnormBwd(dx, dy, x, w Buffer, n, d int, eps float64) error {
	return b.o.rmsnormBwd(dx, dy, x, w, n, d, eps)
}

func (b deviceBackend) rope(x, pos Buffer, n, heads, hd int, theta float64) error {
	return b.o.rope(x, pos, n, heads, hd, theta)
}

func (b deviceBackend) ropeBwd(x, pos Buffer, n, heads, hd int, theta float64) error {
	return b.o.ropeBwd(x, pos, n, heads, hd, theta)
}

func (b deviceBackend) attentionFwd(o, lse, q, k, v, cu Buffer, nb, maxLen, H, KV, hd int) error {
	return b.o.attentionFwd(o, lse, q, k, v, cu, nb, maxLen, H, KV, hd)
}

func (b deviceBackend) attentionBwdPre(dd, o, dout Buffer, n, H, hd int) error {
	return b.o.attentionBwdPre(dd, o, dout, n, H, hd)
}

func (b deviceBackend) attentionBwdDQ(dq, q, k, v, dout, lse, dd, cu Buffer, nb, maxLen, H, KV, hd int) error {
	return b.o.attentionBwdDQ(dq, q, k, v, dout, lse, dd, cu, nb, maxLen, H, KV, hd)
}

func (b deviceBackend) attentionBwdDKV(dk, dv, q, k, v, dout, lse, dd, cu Buffer, nb, maxLen, H, KV, hd int) error {
	return b.o.attentionBwdDKV(dk, dv, q, k, v, dout, lse, dd, cu, nb, maxLen, H, KV, hd)
}

func (b deviceBackend) swiglu(out, g, u Buffer, n int) error { return b.o.swiglu(out, g, u, int64(n)) }

func (b deviceBackend) swigluBwd(dg, du, g, u, dy Buffer, n int) error {
	return b.o.swigluBwd(dg, du, g, u, dy, int64(n))
}

func (b deviceBackend) residualAdd(x, y Buffer, n int) error { return b.o.residualAdd(x, y, int64(n)) }

func (b deviceBackend) castElem(out, x Buffer, n int) error { return b.o.castElem(out, x, int64(n)) }

func (b deviceBackend) dropoutMask(keep Buffer, seed, stream uint64, first, n int64, p float64) error {
	return b.o.dropoutMask(keep, seed, stream, first, n, p)
}

func (b deviceBackend) dropoutApply(out, x, keep Buffer, n int, p float64) error {
	return b.o.dropoutApply(out, x, keep, int64(n), p)
}

func (b deviceBackend) maskMulAdd(dx, g, keep Buffer, n int, p float64) error {
	return b.o.maskMulAdd(dx, g, keep, int64(n), p)
}

func (b deviceBackend) gatherRows(out, x, idx Buffer, R, d int) error {
	return b.o.gatherRows(out, x, idx, R, d)
}

func (b deviceBackend) scatterAddRows(dx, g, idx Buffer, R, d int) error {
	return b.o.scatterAddRows(dx, g, idx, R, d)
}

func (b deviceBackend) ceStats(m, s, zlab, z, labels Buffer, R, vc, v0 int) error {
	return b.o.ceStats(m, s, zlab, z, labels, R, vc, v0)
}

func (b deviceBackend) ceFinish(lse, loss, m, s, zlab Buffer, R int) error {
	return b.o.ceFinish(lse, loss, m, s, zlab, R)
}

func (b deviceBackend) dequant(out, q, scale Buffer, rows, cols int) error {
	return b.o.dequantInt8(out, q, scale, rows, cols)
}

func (b deviceBackend) ceGrad(dz, z, lse, labels Buffer, R, vc, v0 int, scale float32) error {
	return b.o.ceGrad(dz, z, lse, labels, R, vc, v0, scale)
}
