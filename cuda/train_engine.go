//go:build rellagpu

package cuda

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

var _ engine.Trainer = (*Trainer)(nil)

// Trainer is the GPU engine with LoRA adapters: engine.Trainer. The frozen
// base lives on the device as in Engine; the adapters' float32 values stay
// on the host (the optimiser updates Param.Value there) and are copied to
// the device in the storage type at each call; their gradients are computed
// on the device in float32 and added into Param.Grad.
//
// LossGrad packs the batch like the forward pass, keeps each layer's float
// input, computes the loss at the labelled rows only (cross-entropy over
// vocabulary chunks), and goes back through the layers recomputing each one
// from its input (activation recomputation: one layer's activations live at
// a time). LoRA dropout masks are drawn on the device and equal
// cpu.DropoutMasks'.
//
// UNVERIFIED: this code has been compiled but not yet run on a GPU; see
// cuda/README.md for the checks that remain.
type Trainer struct {
	*Engine
	opts  TrainOptions
	mods  []*trainMod
	byKey map[modKey]*trainMod
}

type modKey struct {
	layer  int
	module string
}

// trainMod is one adapter with its device buffers.
type trainMod struct {
	loraSpec
	idx    int    // its number in cpu.DropoutMasks' order (stream idx+1)
	ae, be Buffer // elem copies of A [r, in] and B [out, r]
	da, db Buffer // float32 gradients
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
	en, err := NewEngineWith(m, opts.Options, log)
	if err != nil {
		return nil, err
	}
	tr := &Trainer{Engine: en, opts: opts, byKey: map[modKey]*trainMod{}}
	err = en.dev.Do(func() error {
		free, total, err := en.dev.MemInfo()
		if err != nil {
			return err
		}
		// A pass holds at most maxTokens tokens (a longer example runs alone
		// and may need more), all of them labelled in the worst case.
		need := TrainWorkspaceBytes(en.cfg, en.maxTokens, en.maxTokens, min(opts.VocabChunk, en.cfg.VocabSize), en.elem, specs)
		if need > free {
			return fmt.Errorf("cuda: training does not fit on device %d (%s): a pass of %d tokens needs %.2f GiB beyond the weights, %.2f GiB free of %.2f GiB; lower MaxTokens",
				en.dev.Index, en.dev.Name, en.maxTokens, gib(need), gib(free), gib(total))
		}
		for i, s := range specs {
			md := &trainMod{loraSpec: s, idx: i}
			tr.mods = append(tr.mods, md)
			tr.byKey[modKey{s.layer, s.module}] = md
			na, nb := int64(s.rank*s.in), int64(s.out*s.rank)
			for _, b := range []struct {
				dst *Buffer
				n   int64
			}{{&md.ae, na * int64(en.elem.Size())}, {&md.be, nb * int64(en.elem.Size())}, {&md.da, na * 4}, {&md.db, nb * 4}} {
				if *b.dst, err = en.dev.Alloc(b.n); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		tr.Close()
		return nil, err
	}
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
		for _, m := range tr.mods {
			for _, b := range []Buffer{m.ae, m.be, m.da, m.db} {
				if b.size > 0 {
					tr.dev.Free(b)
				}
			}
		}
		return nil
	})
	return tr.Engine.Close()
}

// arena holds the buffers of one piece of work and frees them together.
type arena struct {
	d    *Device
	bufs []Buffer
	err  error
}

func (a *arena) alloc(n int64) Buffer {
	if a.err != nil {
		return Buffer{}
	}
	b, err := a.d.Alloc(max(n, 4))
	if err != nil {
		a.err = err
		return Buffer{}
	}
	a.bufs = append(a.bufs, b)
	return b
}

// zeros allocates n bytes set to zero.
func (a *arena) zeros(n int64) Buffer {
	b := a.alloc(n)
	if a.err == nil {
		a.err = a.d.zero(b)
	}
	return b
}

func (a *arena) free() {
	for _, b := range a.bufs {
		a.d.Free(b)
	}
	a.bufs = nil
}

// zero sets b to zero bytes (on the stream).
func (d *Device) zero(b Buffer) error {
	return check("cuMemsetD32Async", C.r_cuMemsetD32Async(b.ptr, 0, C.size_t(b.size/4), d.stream))
}

// copyBuf copies n bytes from src to dst (on the stream).
func (d *Device) copyBuf(dst, src Buffer, n int64) error {
	if n > dst.size || n > src.size {
		return fmt.Errorf("cuda: copy of %d bytes between buffers of %d and %d", n, src.size, dst.size)
	}
	return check("cuMemcpyDtoDAsync", C.r_cuMemcpyDtoDAsync(dst.ptr, src.ptr, C.size_t(n), d.stream))
}

// pass is one packed group of sequences on the device.
type pass struct {
	n, B, maxLen int
	rowOff       int64 // tokens of the batch before this pass (dropout draw offset / width)
	ids, pos, cu Buffer
}

// newPass uploads the ids, positions and offsets of seqs.
func (tr *Trainer) newPass(a *arena, seqs [][]int, rowOff int64) (*pass, error) {
	p := &pass{B: len(seqs), rowOff: rowOff}
	lens := make([]int, len(seqs))
	var ids []int
	for i, s := range seqs {
		lens[i] = len(s)
		p.maxLen = max(p.maxLen, len(s))
		ids = append(ids, s...)
	}
	p.n = len(ids)
	cu := Offsets(lens)
	for _, x := range []struct {
		dst *Buffer
		v   []int
	}{{&p.ids, ids}, {&p.pos, Positions(cu)}, {&p.cu, cu}} {
		b, err := tr.dev.uploadInts(x.v)
		if err != nil {
			return nil, err
		}
		a.bufs = append(a.bufs, b)
		*x.dst = b
	}
	return p, nil
}

// loraSave is what one adapter's forward keeps for its backward pass.
type loraSave struct {
	xin, u, keep Buffer // its input (after dropout), u = xin Aᵀ, the keep flags
}

// layerActs are one layer's activations (forward or recomputed).
type layerActs struct {
	n1, q, k, v, att, lse, xmid, n2, g, u, act Buffer
	lora                                       map[string]*loraSave
}

// proj computes y = x Wᵀ plus the adapter of (l, module) if there is one,
// with dropout when train; the adapter's input and u are recorded in acts.
func (tr *Trainer) proj(a *arena, p *pass, acts *layerActs, y, x, w Buffer, l int, module string, train bool, seed uint64) error {
	e, n := tr.elem, p.n
	in, out, err := moduleDims(tr.cfg, module)
	if err != nil {
		return err
	}
	mat := func(b Buffer) Mat { return Mat{Buf: b, Type: e} }
	if err := tr.blas.Linear(mat(y), mat(x), mat(w), n, in, out, 0); err != nil {
		return err
	}
	m := tr.byKey[modKey{l, module}]
	if m == nil {
		return nil
	}
	es := int64(e.Size())
	s := &loraSave{xin: x}
	if train && tr.opts.Dropout > 0 {
		cnt := int64(n) * int64(in)
		s.keep, s.xin = a.alloc(cnt), a.alloc(cnt*es)
		if a.err != nil {
			return a.err
		}
		if err := tr.o.dropoutMask(s.keep, seed, uint64(m.idx)+1, p.rowOff*int64(in), cnt, tr.opts.Dropout); err != nil {
			return err
		}
		if err := tr.o.dropoutApply(s.xin, x, s.keep, cnt, tr.opts.Dropout); err != nil {
			return err
		}
	}
	s.u = a.alloc(int64(n*m.rank) * es)
	if a.err != nil {
		return a.err
	}
	acts.lora[module] = s
	return loraFwd(tr.blas, e, y, s.u, s.xin, m.ae, m.be, n, in, m.rank, out, float32(tr.opts.Scale))
}

// layerForward runs layer l on the float input x: it writes the
// activations into acts (allocated from a) and, when xout is a buffer,
// x_{l+1} into it (xout may be x itself).
func (tr *Trainer) layerForward(a *arena, p *pass, acts *layerActs, l int, x, xout Buffer, train bool, seed uint64) error {
	cfg, o, e := tr.cfg, tr.o, tr.elem
	n := p.n
	D, Q, KVd, FF, H, KV, hd := cfg.HiddenSize, cfg.QDim(), cfg.KVDim(), cfg.IntermediateSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	es := int64(e.Size())
	lw := &tr.layers[l]
	acts.lora = map[string]*loraSave{}
	acts.n1, acts.q, acts.k, acts.v = a.alloc(int64(n*D)*es), a.alloc(int64(n*Q)*es), a.alloc(int64(n*KVd)*es), a.alloc(int64(n*KVd)*es)
	acts.att, acts.lse, acts.xmid = a.alloc(int64(n*Q)*es), a.alloc(int64(n*H)*4), a.alloc(int64(n*D)*4)
	acts.n2, acts.g, acts.u, acts.act = a.alloc(int64(n*D)*es), a.alloc(int64(n*FF)*es), a.alloc(int64(n*FF)*es), a.alloc(int64(n*FF)*es)
	y := a.alloc(int64(n*D) * es)
	if a.err != nil {
		return a.err
	}
	steps := []func() error{
		func() error { return o.rmsnorm(acts.n1, x, lw.ln1, n, D, cfg.RMSNormEps) },
		func() error { return tr.proj(a, p, acts, acts.q, acts.n1, lw.q, l, "q_proj", train, seed) },
		func() error { return tr.proj(a, p, acts, acts.k, acts.n1, lw.k, l, "k_proj", train, seed) },
		func() error { return tr.proj(a, p, acts, acts.v, acts.n1, lw.v, l, "v_proj", train, seed) },
		func() error { return o.rope(acts.q, p.pos, n, H, hd, cfg.RopeTheta) },
		func() error { return o.rope(acts.k, p.pos, n, KV, hd, cfg.RopeTheta) },
		func() error {
			return o.attentionFwd(acts.att, acts.lse, acts.q, acts.k, acts.v, p.cu, p.B, p.maxLen, H, KV, hd)
		},
		func() error { return tr.proj(a, p, acts, y, acts.att, lw.o, l, "o_proj", train, seed) },
		func() error { return tr.dev.copyBuf(acts.xmid, x, int64(n*D)*4) },
		func() error { return o.residualAdd(acts.xmid, y, int64(n*D)) },
		func() error { return o.rmsnorm(acts.n2, acts.xmid, lw.ln2, n, D, cfg.RMSNormEps) },
		func() error { return tr.proj(a, p, acts, acts.g, acts.n2, lw.gate, l, "gate_proj", train, seed) },
		func() error { return tr.proj(a, p, acts, acts.u, acts.n2, lw.up, l, "up_proj", train, seed) },
		func() error { return o.swiglu(acts.act, acts.g, acts.u, int64(n*FF)) },
	}
	if xout.size > 0 {
		steps = append(steps,
			func() error { return tr.proj(a, p, acts, y, acts.act, lw.down, l, "down_proj", train, seed) },
			func() error { return tr.dev.copyBuf(xout, acts.xmid, int64(n*D)*4) },
			func() error { return o.residualAdd(xout, y, int64(n*D)) })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("cuda: layer %d forward: %w", l, err)
		}
	}
	return nil
}

// projBackward adds to dx (float [n, in]) the gradient of the projection's
// input given dy (elem [n, out]): dy W, plus the adapter's share, whose
// gradients go into its dA and dB. beta 0 overwrites dx first.
func (tr *Trainer) projBackward(a *arena, p *pass, acts *layerActs, dx, dy, w Buffer, l int, module string, beta float32) error {
	e, n := tr.elem, p.n
	in, out, err := moduleDims(tr.cfg, module)
	if err != nil {
		return err
	}
	if err := gemmRM(tr.blas, false, false, n, in, out, 1, Mat{Buf: dy, Type: e}, Mat{Buf: w, Type: e}, beta, Mat{Buf: dx, Type: F32}); err != nil {
		return err
	}
	m := tr.byKey[modKey{l, module}]
	if m == nil {
		return nil
	}
	s := acts.lora[module]
	if s == nil {
		return fmt.Errorf("cuda: layer %d %s: adapter input not kept", l, module)
	}
	du := a.alloc(int64(n*m.rank) * int64(e.Size()))
	var dxd Buffer
	if tr.opts.Dropout > 0 {
		dxd = a.alloc(int64(n*in) * 4)
	}
	if a.err != nil {
		return a.err
	}
	return tr.o.loraBwd(tr.blas, m.da, m.db, dx, du, dxd, dy, s.xin, s.u, m.ae, m.be, s.keep, n, in, m.rank, out,
		float32(tr.opts.Scale), tr.opts.Dropout)
}

// layerBackward recomputes layer l from its input x and adds the gradient
// of its input into dx, which holds the gradient of its output.
func (tr *Trainer) layerBackward(p *pass, l int, x, dx Buffer, seed uint64) error {
	cfg, o, e := tr.cfg, tr.o, tr.elem
	n := p.n
	D, Q, KVd, FF, H, KV, hd := cfg.HiddenSize, cfg.QDim(), cfg.KVDim(), cfg.IntermediateSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	es := int64(e.Size())
	a := &arena{d: tr.dev}
	defer a.free()
	var acts layerActs
	if err := tr.layerForward(a, p, &acts, l, x, Buffer{}, true, seed); err != nil {
		return err
	}
	lw := &tr.layers[l]
	dyE := a.alloc(int64(n*D) * es)
	dact := a.alloc(int64(n*FF) * 4)
	dn := a.alloc(int64(n*D) * 4)
	datt := a.alloc(int64(n*Q) * 4)
	dattE, dd := a.alloc(int64(n*Q)*es), a.alloc(int64(n*H)*4)
	dq, dk, dv := a.alloc(int64(n*Q)*es), a.alloc(int64(n*KVd)*es), a.alloc(int64(n*KVd)*es)
	if a.err != nil {
		return a.err
	}
	steps := []func() error{
		// MLP: x_{l+1} = xmid + down(swiglu(gate(n2), up(n2))), n2 = rmsnorm(xmid)
		func() error { return o.castElem(dyE, dx, int64(n*D)) },
		func() error { return tr.projBackward(a, p, &acts, dact, dyE, lw.down, l, "down_proj", 0) },
		func() error { return o.castElem(acts.act, dact, int64(n*FF)) }, // act is no longer needed: dact in elem
		func() error { return o.swigluBwd(acts.g, acts.u, acts.g, acts.u, acts.act, int64(n*FF)) },
		func() error { return tr.projBackward(a, p, &acts, dn, acts.g, lw.gate, l, "gate_proj", 0) },
		func() error { return tr.projBackward(a, p, &acts, dn, acts.u, lw.up, l, "up_proj", 1) },
		func() error { return o.rmsnormBwd(dx, dn, acts.xmid, lw.ln2, n, D, cfg.RMSNormEps) },
		// attention: xmid = x + o_proj(attention(rope(q), rope(k), v)), from n1 = rmsnorm(x)
		func() error { return o.castElem(dyE, dx, int64(n*D)) },
		func() error { return tr.projBackward(a, p, &acts, datt, dyE, lw.o, l, "o_proj", 0) },
		func() error { return o.castElem(dattE, datt, int64(n*Q)) },
		func() error { return o.attentionBwdPre(dd, acts.att, dattE, n, H, hd) },
		func() error {
			return o.attentionBwdDQ(dq, acts.q, acts.k, acts.v, dattE, acts.lse, dd, p.cu, p.B, p.maxLen, H, KV, hd)
		},
		func() error {
			return o.attentionBwdDKV(dk, dv, acts.q, acts.k, acts.v, dattE, acts.lse, dd, p.cu, p.B, p.maxLen, H, KV, hd)
		},
		func() error { return o.ropeBwd(dq, p.pos, n, H, hd, cfg.RopeTheta) },
		func() error { return o.ropeBwd(dk, p.pos, n, KV, hd, cfg.RopeTheta) },
		func() error { return tr.projBackward(a, p, &acts, dn, dq, lw.q, l, "q_proj", 0) },
		func() error { return tr.projBackward(a, p, &acts, dn, dk, lw.k, l, "k_proj", 1) },
		func() error { return tr.projBackward(a, p, &acts, dn, dv, lw.v, l, "v_proj", 1) },
		func() error { return o.rmsnormBwd(dx, dn, x, lw.ln1, n, D, cfg.RMSNormEps) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("cuda: layer %d backward: %w", l, err)
		}
	}
	return nil
}

// LossGrad runs forward and backward over batch in training mode (LoRA
// dropout from dropoutSeed, as cpu.DropoutMasks draws it) and adds the
// gradient of the summed cross-entropy over the labelled tokens into each
// Param.Grad. It returns that sum and the number of labelled tokens.
func (tr *Trainer) LossGrad(ctx context.Context, batch []engine.Example, dropoutSeed uint64) (float64, int, error) {
	V := tr.cfg.VocabSize
	lens := make([]int, len(batch))
	for i, ex := range batch {
		if len(ex.Tokens) == 0 || len(ex.Labels) != len(ex.Tokens) {
			return 0, 0, fmt.Errorf("cuda: example %d has %d tokens and %d labels", i, len(ex.Tokens), len(ex.Labels))
		}
		for t, id := range ex.Tokens {
			if id < 0 || id >= V {
				return 0, 0, fmt.Errorf("cuda: example %d position %d: token %d outside the vocabulary [0, %d)", i, t, id, V)
			}
			if l := ex.Labels[t]; l != engine.IgnoreIndex && (l < 0 || l >= V) {
				return 0, 0, fmt.Errorf("cuda: example %d position %d: label %d outside the vocabulary", i, t, l)
			}
		}
		lens[i] = len(ex.Tokens)
	}
	var lossSum float64
	nTok := 0
	err := tr.dev.Do(func() error {
		e := tr.elem
		for _, m := range tr.mods {
			if err := errors.Join(tr.dev.Upload(m.ae, e.encode(m.a.Value)), tr.dev.Upload(m.be, e.encode(m.b.Value)),
				tr.dev.zero(m.da), tr.dev.zero(m.db)); err != nil {
				return err
			}
		}
		rowOff := int64(0)
		for _, c := range chunks(lens, tr.maxTokens) {
			if err := ctx.Err(); err != nil {
				return err
			}
			part := batch[c[0]:c[1]]
			ls, nt, err := tr.lossGradPass(part, rowOff, dropoutSeed)
			if err != nil {
				return err
			}
			lossSum += ls
			nTok += nt
			for _, ex := range part {
				rowOff += int64(len(ex.Tokens))
			}
		}
		for _, m := range tr.mods {
			for _, g := range []struct {
				p *engine.Param
				b Buffer
			}{{m.a, m.da}, {m.b, m.db}} {
				v, err := tr.dev.downloadFloats(g.b, len(g.p.Grad), F32)
				if err != nil {
					return err
				}
				for i, x := range v {
					g.p.Grad[i] += x
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return lossSum, nTok, nil
}

// lossGradPass runs one packed group of examples (device thread).
func (tr *Trainer) lossGradPass(batch []engine.Example, rowOff int64, seed uint64) (float64, int, error) {
	cfg, o, e := tr.cfg, tr.o, tr.elem
	D := cfg.HiddenSize
	es := int64(e.Size())
	var idx, labels []int
	seqs := make([][]int, len(batch))
	row := 0
	for i, ex := range batch {
		seqs[i] = ex.Tokens
		for t, l := range ex.Labels {
			if l != engine.IgnoreIndex {
				idx, labels = append(idx, row+t), append(labels, l)
			}
		}
		row += len(ex.Tokens)
	}
	R := len(idx)
	if R == 0 {
		return 0, 0, nil // nothing to learn from; the masks of later passes do not depend on this one
	}
	a := &arena{d: tr.dev}
	defer a.free()
	p, err := tr.newPass(a, seqs, rowOff)
	if err != nil {
		return 0, 0, err
	}
	n := p.n
	xs := make([]Buffer, cfg.NumHiddenLayers+1)
	for i := range xs {
		xs[i] = a.alloc(int64(n*D) * 4)
	}
	if a.err != nil {
		return 0, 0, a.err
	}
	if err := o.embed(xs[0], tr.embed, p.ids, n, D, cfg.VocabSize); err != nil {
		return 0, 0, err
	}
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		la := &arena{d: tr.dev}
		var acts layerActs
		err := tr.layerForward(la, p, &acts, l, xs[l], xs[l+1], true, seed)
		la.free()
		if err != nil {
			return 0, 0, err
		}
	}
	// Loss at the labelled rows: final norm, LM head by vocabulary chunks.
	vc := min(tr.opts.VocabChunk, cfg.VocabSize)
	idb, err := tr.dev.uploadInts(idx)
	if err != nil {
		return 0, 0, err
	}
	a.bufs = append(a.bufs, idb)
	lb, err := tr.dev.uploadInts(labels)
	if err != nil {
		return 0, 0, err
	}
	a.bufs = append(a.bufs, lb)
	xr, hr := a.alloc(int64(R*D)*4), a.alloc(int64(R*D)*es)
	dh, dxr := a.zeros(int64(R*D)*4), a.zeros(int64(R*D)*4)
	loss := a.alloc(int64(R) * 4)
	z, dz := a.alloc(int64(R*vc)*4), a.alloc(int64(R*vc)*es)
	m, s, zlab, lse := a.alloc(int64(R)*4), a.alloc(int64(R)*4), a.alloc(int64(R)*4), a.alloc(int64(R)*4)
	dx := a.zeros(int64(n*D) * 4)
	if a.err != nil {
		return 0, 0, a.err
	}
	last := xs[cfg.NumHiddenLayers]
	for _, step := range []func() error{
		func() error { return o.gatherRows(xr, last, idb, R, D) },
		func() error { return o.rmsnorm(hr, xr, tr.norm, R, D, cfg.RMSNormEps) },
		func() error {
			return o.crossEntropy(tr.blas, loss, dh, hr, tr.head, lb, z, dz, m, s, zlab, lse, R, cfg.VocabSize, D, vc, 1)
		},
		func() error { return o.rmsnormBwd(dxr, dh, xr, tr.norm, R, D, cfg.RMSNormEps) },
		func() error { return o.scatterAddRows(dx, dxr, idb, R, D) },
	} {
		if err := step(); err != nil {
			return 0, 0, fmt.Errorf("cuda: loss: %w", err)
		}
	}
	lossRows, err := tr.dev.downloadFloats(loss, R, F32)
	if err != nil {
		return 0, 0, err
	}
	var sum float64
	for _, v := range lossRows {
		sum += float64(v)
	}
	if math.IsNaN(sum) || math.IsInf(sum, 0) {
		return 0, 0, fmt.Errorf("cuda: loss is %v", sum)
	}
	for l := cfg.NumHiddenLayers - 1; l >= 0; l-- {
		if err := tr.layerBackward(p, l, xs[l], dx, seed); err != nil {
			return 0, 0, err
		}
	}
	return sum, R, nil
}

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
		e := tr.elem
		for _, m := range tr.mods {
			if err := errors.Join(tr.dev.Upload(m.ae, e.encode(m.a.Value)), tr.dev.Upload(m.be, e.encode(m.b.Value))); err != nil {
				return err
			}
		}
		for _, c := range chunks(lens, tr.maxTokens) {
			if err := ctx.Err(); err != nil {
				return err
			}
			flat, width, err := tr.forwardLoRA(seqs[c[0]:c[1]], head)
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

// forwardLoRA runs one packed group through the layers with the adapters (device thread).
func (tr *Trainer) forwardLoRA(seqs [][]int, head func(x, cu Buffer, n, B int) ([]float32, int, error)) ([]float32, int, error) {
	a := &arena{d: tr.dev}
	defer a.free()
	p, err := tr.newPass(a, seqs, 0)
	if err != nil {
		return nil, 0, err
	}
	x := a.alloc(int64(p.n*tr.cfg.HiddenSize) * 4)
	if a.err != nil {
		return nil, 0, a.err
	}
	if err := tr.o.embed(x, tr.embed, p.ids, p.n, tr.cfg.HiddenSize, tr.cfg.VocabSize); err != nil {
		return nil, 0, err
	}
	for l := 0; l < tr.cfg.NumHiddenLayers; l++ {
		la := &arena{d: tr.dev}
		var acts layerActs
		err := tr.layerForward(la, p, &acts, l, x, x, false, 0)
		la.free()
		if err != nil {
			return nil, 0, err
		}
	}
	return head(x, p.cu, p.n, p.B)
}
