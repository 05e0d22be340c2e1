package cuda

import (
	"errors"
	"fmt"
	"math"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// The algorithm of a GPU training step, written once over a backend: the
// device (train_engine.go: the kernels of train.cu and cuBLAS) or the host
// (train_step_test.go: the references of ref.go and train_ref.go, with
// storage rounding emulated), so that its orchestration — packing, buffer
// reuse, recomputation, dropout offsets, accumulation — is tested here
// without a GPU, against LossGradRef and the CPU engine.

// bufKind is the element type of a buffer of the step.
type bufKind int

const (
	kFloat bufKind = iota // float32
	kElem                 // the storage type (Elem)
	kByte                 // dropout keep flags
	kInt                  // int32 ids, positions, offsets, rows, labels
)

// backend runs the operations of a training step on buffers of type B.
// Sizes are in elements; matrices are row-major. Every method mirrors a
// kernel of train.cu or llama.cu (same name, same semantics), except gemm:
// the cuBLAS call g (cublasGemmEx or strided batched, column-major, made by
// RowMajorGemm in gemmOn) with the row-major operands left and right (elem)
// it was mapped from and c (float or elem, as ck says). The device passes g
// to cuBLAS unchanged; the host backend evaluates it with EvalRowMajor.
type backend[B any] interface {
	elem() Elem
	alloc(n int, k bufKind) (B, error)
	free(b B)
	zero(b B, n int) error // n float values
	uploadInts(v []int) (B, error)
	upload(b B, v []float32, k bufKind) error // into an existing float or elem buffer (elem rounds)
	download(b B, n int) ([]float32, error)   // n float values
	copyFloats(dst, src B, n int) error
	view(b B, off, n int, k bufKind) (B, error)
	gemm(g GemmCall, left, right, c B, ck bufKind) error

	embed(x, table, ids B, n, d, vocab int) error
	rmsnorm(out, x, w B, n, d int, eps float64) error
	rmsnormBwd(dx, dy, x, w B, n, d int, eps float64) error
	rope(x, pos B, n, heads, hd int, theta float64) error
	ropeBwd(x, pos B, n, heads, hd int, theta float64) error
	attentionFwd(o, lse, q, k, v, cu B, nb, maxLen, H, KV, hd int) error
	attentionBwdPre(dd, o, dout B, n, H, hd int) error
	attentionBwdDQ(dq, q, k, v, dout, lse, dd, cu B, nb, maxLen, H, KV, hd int) error
	attentionBwdDKV(dk, dv, q, k, v, dout, lse, dd, cu B, nb, maxLen, H, KV, hd int) error
	swiglu(out, g, u B, n int) error
	swigluBwd(dg, du, g, u, dy B, n int) error
	residualAdd(x, y B, n int) error
	castElem(out, x B, n int) error
	dropoutMask(keep B, seed, stream uint64, first, n int64, p float64) error
	dropoutApply(out, x, keep B, n int, p float64) error
	maskMulAdd(dx, g, keep B, n int, p float64) error
	gatherRows(out, x, idx B, R, d int) error
	scatterAddRows(dx, g, idx B, R, d int) error
	ceStats(m, s, zlab, z, labels B, R, vc, v0 int) error
	ceFinish(lse, loss, m, s, zlab B, R int) error
	ceGrad(dz, z, lse, labels B, R, vc, v0 int, scale float32) error
	// dequant writes the [rows, cols] int8 weight q (kByte) with per-row
	// scales (kFloat) into out (elem): dequant_int8.
	dequant(out, q, scale B, rows, cols int) error
}

// gemmOn computes the row-major product C [m, n] = alpha op(A) op(B) +
// beta C on be (A stored [m, k], or [k, m] when transA; B [k, n], or [n,
// k] when transB), through the cuBLAS call RowMajorGemm maps it to.
func gemmOn[B any](be backend[B], transA, transB bool, m, n, k int, alpha float32, a, b B, beta float32, c B, ck bufKind) error {
	return be.gemm(RowMajorGemm(transA, transB, m, n, k, alpha, beta), a, b, c, ck)
}

// bufArena holds the buffers of one piece of work and frees them together;
// the first error sticks.
type bufArena[B any] struct {
	be   backend[B]
	bufs []B
	err  error
}

func (a *bufArena[B]) alloc(n int, k bufKind) B {
	var b B
	if a.err != nil {
		return b
	}
	b, a.err = a.be.alloc(max(n, 1), k)
	if a.err == nil {
		a.bufs = append(a.bufs, b)
	}
	return b
}

func (a *bufArena[B]) zeros(n int) B {
	b := a.alloc(n, kFloat)
	if a.err == nil {
		a.err = a.be.zero(b, n)
	}
	return b
}

func (a *bufArena[B]) ints(v []int) B {
	var b B
	if a.err != nil {
		return b
	}
	b, a.err = a.be.uploadInts(v)
	if a.err == nil {
		a.bufs = append(a.bufs, b)
	}
	return b
}

func (a *bufArena[B]) release() {
	for _, b := range a.bufs {
		a.be.free(b)
	}
	a.bufs = nil
}

// stepLayer is one decoder layer's frozen weights (elem).
type stepLayer[B any] struct {
	ln1, q, k, v, o, ln2, gate, up, down B
}

// stepMod is one adapter: its spec, its number in cpu.DropoutMasks' order,
// elem copies of A and B, float gradients.
type stepMod[B any] struct {
	loraSpec
	idx            int
	ae, be, da, db B
}

type modKey struct {
	layer  int
	module string
}

// stepper runs LossGrad and the adapted forward pass on a backend.
type stepper[B any] struct {
	be             backend[B]
	cfg            model.Config
	embed, norm    B
	head           B
	layers         []stepLayer[B]
	mods           []*stepMod[B]
	byKey          map[modKey]*stepMod[B]
	scale, dropout float64
	vocabChunk     int
	maxTokens      int
	// quant, when the base weights are int8 (model.quantize), holds each
	// layer's quantised projections by module name (the stepLayer fields
	// of those modules are then unused), and deq the elem buffer, as large
	// as the largest projection, that weight dequantises them into.
	quant []map[string]quantWeight[B]
	deq   B
	// lossScale seeds the backward pass (dynamic loss scaling for fp16
	// storage): the gradients added into Param.Grad are lossScale times
	// the true ones; 0 means 1.
	lossScale float64
}

// stepPass is one packed group of sequences.
type stepPass[B any] struct {
	n, nb, maxLen int
	rowOff        int64 // tokens of the batch before this pass
	ids, pos, cu  B
}

func (s *stepper[B]) newPass(a *bufArena[B], seqs [][]int, rowOff int64) *stepPass[B] {
	p := &stepPass[B]{nb: len(seqs), rowOff: rowOff}
	lens := make([]int, len(seqs))
	var ids []int
	for i, sq := range seqs {
		lens[i] = len(sq)
		p.maxLen = max(p.maxLen, len(sq))
		ids = append(ids, sq...)
	}
	p.n = len(ids)
	cu := Offsets(lens)
	p.ids, p.pos, p.cu = a.ints(ids), a.ints(Positions(cu)), a.ints(cu)
	return p
}

// loraKept is what one adapter's forward keeps for its backward pass.
type loraKept[B any] struct {
	xin, u, keep B // its input (after dropout), u = xin Aᵀ, the keep flags
}

// layerActs are one layer's activations (forward or recomputed).
type layerActs[B any] struct {
	n1, q, k, v, att, lse, xmid, n2, g, u, act B
	lora                                       map[string]*loraKept[B]
}

// loraFwdOn adds an adapter's output to y (elem [n, out]): u = xd Aᵀ (elem
// [n, r]), y += scale · u Bᵀ; xd is the module input after dropout (elem).
func loraFwdOn[B any](be backend[B], y, u, xd, a, b B, n, in, r, out int, scale float32) error {
	if err := gemmOn(be, false, true, n, r, in, 1, xd, a, 0, u, kElem); err != nil {
		return err
	}
	return gemmOn(be, false, true, n, out, r, scale, u, b, 1, y, kElem)
}

// loraBwdOn accumulates an adapter's gradients from dy (elem [n, out]):
// dB += scale · dyᵀ u, du = scale · dy B (elem scratch [n, r]), dA += duᵀ xd,
// and dx (float [n, in]) += keep ∘ du A / (1−p), through dxd (float scratch
// [n, in]) when p > 0. dA [r, in] and dB [out, r] are float.
func loraBwdOn[B any](be backend[B], da, db, dx, du, dxd, dy, xd, u, a, b, keep B, n, in, r, out int, scale float32, p float64) error {
	if err := gemmOn(be, true, false, out, r, n, scale, dy, u, 1, db, kFloat); err != nil {
		return err
	}
	if err := gemmOn(be, false, false, n, r, out, scale, dy, b, 0, du, kElem); err != nil {
		return err
	}
	if err := gemmOn(be, true, false, r, in, n, 1, du, xd, 1, da, kFloat); err != nil {
		return err
	}
	if p == 0 {
		return gemmOn(be, false, false, n, in, r, 1, du, a, 1, dx, kFloat)
	}
	if err := gemmOn(be, false, false, n, in, r, 1, du, a, 0, dxd, kFloat); err != nil {
		return err
	}
	return be.maskMulAdd(dx, dxd, keep, n*in, p)
}

// crossEntropyOn computes the loss of the R labelled rows h (elem [R, d])
// against the LM head w (elem [V, d]) over vocabulary chunks of vc rows,
// leaving each row's loss in loss, and adds the gradient of scale · Σ loss
// with respect to h into dh (float [R, d]). Scratch: z (float [R, vc]), dz
// (elem [R, vc]), m, s, zlab, lse (float [R]).
func crossEntropyOn[B any](be backend[B], loss, dh, h, w, labels, z, dz, m, s, zlab, lse B, R, V, d, vc int, scale float32) error {
	logits := func(v0, nc int) (B, error) {
		wc, err := be.view(w, v0*d, nc*d, kElem)
		if err != nil {
			return wc, err
		}
		return wc, gemmOn(be, false, true, R, nc, d, 1, h, wc, 0, z, kFloat)
	}
	for v0 := 0; v0 < V; v0 += vc {
		nc := min(vc, V-v0)
		if _, err := logits(v0, nc); err != nil {
			return err
		}
		if err := be.ceStats(m, s, zlab, z, labels, R, nc, v0); err != nil {
			return err
		}
	}
	if err := be.ceFinish(lse, loss, m, s, zlab, R); err != nil {
		return err
	}
	for v0 := 0; v0 < V; v0 += vc {
		nc := min(vc, V-v0)
		wc, err := logits(v0, nc)
		if err != nil {
			return err
		}
		if err := be.ceGrad(dz, z, lse, labels, R, nc, v0, scale); err != nil {
			return err
		}
		if err := gemmOn(be, false, false, R, d, nc, 1, dz, wc, 1, dh, kFloat); err != nil {
			return err
		}
	}
	return nil
}

// keepLoRA computes, for the adapter of (l, module) if there is one, its
// input xin (x after dropout when train) and u = xin Aᵀ, and keeps both in
// acts for the backward pass. It returns the adapter (nil if none).
func (s *stepper[B]) keepLoRA(a *bufArena[B], p *stepPass[B], acts *layerActs[B], x B, l int, module string, train bool, seed uint64) (*stepMod[B], error) {
	m := s.byKey[modKey{l, module}]
	if m == nil {
		return nil, nil
	}
	n, in := p.n, m.in
	kept := &loraKept[B]{xin: x}
	if train && s.dropout > 0 {
		cnt := n * in
		kept.keep, kept.xin = a.alloc(cnt, kByte), a.alloc(cnt, kElem)
		if a.err != nil {
			return nil, a.err
		}
		if err := s.be.dropoutMask(kept.keep, seed, uint64(m.idx)+1, p.rowOff*int64(in), int64(cnt), s.dropout); err != nil {
			return nil, err
		}
		if err := s.be.dropoutApply(kept.xin, x, kept.keep, cnt, s.dropout); err != nil {
			return nil, err
		}
	}
	kept.u = a.alloc(n*m.rank, kElem)
	if a.err != nil {
		return nil, a.err
	}
	acts.lora[module] = kept
	return m, gemmOn(s.be, false, true, n, m.rank, in, 1, kept.xin, m.ae, 0, kept.u, kElem)
}

// proj computes y = x Wᵀ plus the adapter of (l, module) if there is one,
// scale · u Bᵀ with u from keepLoRA.
func (s *stepper[B]) proj(a *bufArena[B], p *stepPass[B], acts *layerActs[B], y, x, w B, l int, module string, train bool, seed uint64) error {
	n := p.n
	in, out, err := moduleDims(s.cfg, module)
	if err != nil {
		return err
	}
	if w, err = s.weight(l, module, w); err != nil {
		return err
	}
	if err := gemmOn(s.be, false, true, n, out, in, 1, x, w, 0, y, kElem); err != nil {
		return err
	}
	m, err := s.keepLoRA(a, p, acts, x, l, module, train, seed)
	if m == nil || err != nil {
		return err
	}
	return gemmOn(s.be, false, true, n, out, m.rank, float32(s.scale), acts.lora[module].u, m.be, 1, y, kElem)
}

// layerForward runs layer l on the float input x, writing the activations
// into acts (allocated from a) and, when out is true, x_{l+1} into xout
// (which may be x itself); without out (the recomputation before the
// backward pass) it stops after the MLP activation and the down adapter's
// input.
func (s *stepper[B]) layerForward(a *bufArena[B], p *stepPass[B], acts *layerActs[B], l int, x, xout B, out, train bool, seed uint64) error {
	cfg, be := s.cfg, s.be
	n := p.n
	D, Q, KVd, FF, H, KV, hd := cfg.HiddenSize, cfg.QDim(), cfg.KVDim(), cfg.IntermediateSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	lw := &s.layers[l]
	acts.lora = map[string]*loraKept[B]{}
	acts.n1, acts.q, acts.k, acts.v = a.alloc(n*D, kElem), a.alloc(n*Q, kElem), a.alloc(n*KVd, kElem), a.alloc(n*KVd, kElem)
	acts.att, acts.lse, acts.xmid = a.alloc(n*Q, kElem), a.alloc(n*H, kFloat), a.alloc(n*D, kFloat)
	acts.n2, acts.g, acts.u, acts.act = a.alloc(n*D, kElem), a.alloc(n*FF, kElem), a.alloc(n*FF, kElem), a.alloc(n*FF, kElem)
	y := a.alloc(n*D, kElem)
	if a.err != nil {
		return a.err
	}
	steps := []func() error{
		func() error { return be.rmsnorm(acts.n1, x, lw.ln1, n, D, cfg.RMSNormEps) },
		func() error { return s.proj(a, p, acts, acts.q, acts.n1, lw.q, l, "q_proj", train, seed) },
		func() error { return s.proj(a, p, acts, acts.k, acts.n1, lw.k, l, "k_proj", train, seed) },
		func() error { return s.proj(a, p, acts, acts.v, acts.n1, lw.v, l, "v_proj", train, seed) },
		func() error { return be.rope(acts.q, p.pos, n, H, hd, cfg.RopeTheta) },
		func() error { return be.rope(acts.k, p.pos, n, KV, hd, cfg.RopeTheta) },
		func() error {
			return be.attentionFwd(acts.att, acts.lse, acts.q, acts.k, acts.v, p.cu, p.nb, p.maxLen, H, KV, hd)
		},
		func() error { return s.proj(a, p, acts, y, acts.att, lw.o, l, "o_proj", train, seed) },
		func() error { return be.copyFloats(acts.xmid, x, n*D) },
		func() error { return be.residualAdd(acts.xmid, y, n*D) },
		func() error { return be.rmsnorm(acts.n2, acts.xmid, lw.ln2, n, D, cfg.RMSNormEps) },
		func() error { return s.proj(a, p, acts, acts.g, acts.n2, lw.gate, l, "gate_proj", train, seed) },
		func() error { return s.proj(a, p, acts, acts.u, acts.n2, lw.up, l, "up_proj", train, seed) },
		func() error { return be.swiglu(acts.act, acts.g, acts.u, n*FF) },
	}
	if out {
		steps = append(steps,
			func() error { return s.proj(a, p, acts, y, acts.act, lw.down, l, "down_proj", train, seed) },
			func() error { return be.copyFloats(xout, acts.xmid, n*D) },
			func() error { return be.residualAdd(xout, y, n*D) })
	} else { // recomputation: the output is not needed, the down adapter's input and u are
		steps = append(steps, func() error {
			_, err := s.keepLoRA(a, p, acts, acts.act, l, "down_proj", train, seed)
			return err
		})
	}
	for _, st := range steps {
		if err := st(); err != nil {
			return fmt.Errorf("cuda: layer %d forward: %w", l, err)
		}
	}
	return nil
}

// projBackward writes (beta 0) or adds (beta 1) into dx (float [n, in])
// the gradient of the projection's input given dy (elem [n, out]): dy W,
// plus the adapter's share, whose gradients go into its dA and dB.
func (s *stepper[B]) projBackward(a *bufArena[B], p *stepPass[B], acts *layerActs[B], dx, dy, w B, l int, module string, beta float32) error {
	n := p.n
	in, out, err := moduleDims(s.cfg, module)
	if err != nil {
		return err
	}
	if w, err = s.weight(l, module, w); err != nil {
		return err
	}
	if err := gemmOn(s.be, false, false, n, in, out, 1, dy, w, beta, dx, kFloat); err != nil {
		return err
	}
	m := s.byKey[modKey{l, module}]
	if m == nil {
		return nil
	}
	kept := acts.lora[module]
	if kept == nil {
		return fmt.Errorf("cuda: layer %d %s: adapter input not kept", l, module)
	}
	du := a.alloc(n*m.rank, kElem)
	var dxd B
	if s.dropout > 0 {
		dxd = a.alloc(n*in, kFloat)
	}
	if a.err != nil {
		return a.err
	}
	return loraBwdOn(s.be, m.da, m.db, dx, du, dxd, dy, kept.xin, kept.u, m.ae, m.be, kept.keep, n, in, m.rank, out,
		float32(s.scale), s.dropout)
}

// layerBackward recomputes layer l from its input x and adds the gradient
// of its input into dx, which holds the gradient of its output.
func (s *stepper[B]) layerBackward(p *stepPass[B], l int, x, dx B, seed uint64) error {
	cfg, be := s.cfg, s.be
	n := p.n
	D, Q, KVd, FF, H, KV, hd := cfg.HiddenSize, cfg.QDim(), cfg.KVDim(), cfg.IntermediateSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	a := &bufArena[B]{be: be}
	defer a.release()
	var acts layerActs[B]
	var none B
	if err := s.layerForward(a, p, &acts, l, x, none, false, true, seed); err != nil {
		return err
	}
	lw := &s.layers[l]
	dyE, dact, dn := a.alloc(n*D, kElem), a.alloc(n*FF, kFloat), a.alloc(n*D, kFloat)
	datt, dattE, dd := a.alloc(n*Q, kFloat), a.alloc(n*Q, kElem), a.alloc(n*H, kFloat)
	dq, dk, dv := a.alloc(n*Q, kElem), a.alloc(n*KVd, kElem), a.alloc(n*KVd, kElem)
	if a.err != nil {
		return a.err
	}
	steps := []func() error{
		// MLP: x_{l+1} = xmid + down(swiglu(gate(n2), up(n2))), n2 = rmsnorm(xmid)
		func() error { return be.castElem(dyE, dx, n*D) },
		func() error { return s.projBackward(a, p, &acts, dact, dyE, lw.down, l, "down_proj", 0) },
		func() error { return be.castElem(acts.act, dact, n*FF) }, // act is no longer needed: it takes dact
		func() error { return be.swigluBwd(acts.g, acts.u, acts.g, acts.u, acts.act, n*FF) },
		func() error { return s.projBackward(a, p, &acts, dn, acts.g, lw.gate, l, "gate_proj", 0) },
		func() error { return s.projBackward(a, p, &acts, dn, acts.u, lw.up, l, "up_proj", 1) },
		func() error { return be.rmsnormBwd(dx, dn, acts.xmid, lw.ln2, n, D, cfg.RMSNormEps) },
		// attention: xmid = x + o_proj(attention(rope(q), rope(k), v)), q, k, v from n1 = rmsnorm(x)
		func() error { return be.castElem(dyE, dx, n*D) },
		func() error { return s.projBackward(a, p, &acts, datt, dyE, lw.o, l, "o_proj", 0) },
		func() error { return be.castElem(dattE, datt, n*Q) },
		func() error { return be.attentionBwdPre(dd, acts.att, dattE, n, H, hd) },
		func() error {
			return be.attentionBwdDQ(dq, acts.q, acts.k, acts.v, dattE, acts.lse, dd, p.cu, p.nb, p.maxLen, H, KV, hd)
		},
		func() error {
			return be.attentionBwdDKV(dk, dv, acts.q, acts.k, acts.v, dattE, acts.lse, dd, p.cu, p.nb, p.maxLen, H, KV, hd)
		},
		func() error { return be.ropeBwd(dq, p.pos, n, H, hd, cfg.RopeTheta) },
		func() error { return be.ropeBwd(dk, p.pos, n, KV, hd, cfg.RopeTheta) },
		func() error { return s.projBackward(a, p, &acts, dn, dq, lw.q, l, "q_proj", 0) },
		func() error { return s.projBackward(a, p, &acts, dn, dk, lw.k, l, "k_proj", 1) },
		func() error { return s.projBackward(a, p, &acts, dn, dv, lw.v, l, "v_proj", 1) },
		func() error { return be.rmsnormBwd(dx, dn, x, lw.ln1, n, D, cfg.RMSNormEps) },
	}
	for _, st := range steps {
		if err := st(); err != nil {
			return fmt.Errorf("cuda: layer %d backward: %w", l, err)
		}
	}
	return nil
}

// checkBatch validates a training batch and returns the examples' lengths.
func checkBatch(batch []engine.Example, vocab int) ([]int, error) {
	lens := make([]int, len(batch))
	for i, ex := range batch {
		if len(ex.Tokens) == 0 || len(ex.Labels) != len(ex.Tokens) {
			return nil, fmt.Errorf("cuda: example %d has %d tokens and %d labels", i, len(ex.Tokens), len(ex.Labels))
		}
		for t, id := range ex.Tokens {
			if id < 0 || id >= vocab {
				return nil, fmt.Errorf("cuda: example %d position %d: token %d outside the vocabulary [0, %d)", i, t, id, vocab)
			}
			if l := ex.Labels[t]; l != engine.IgnoreIndex && (l < 0 || l >= vocab) {
				return nil, fmt.Errorf("cuda: example %d position %d: label %d outside the vocabulary", i, t, l)
			}
		}
		lens[i] = len(ex.Tokens)
	}
	return lens, nil
}

// lossGrad is LossGrad on the backend: it copies the adapters' values in,
// runs the batch in passes of at most maxTokens tokens and adds the
// gradients into Param.Grad.
func (s *stepper[B]) lossGrad(batch []engine.Example, seed uint64, ctxErr func() error) (float64, int, error) {
	lens, err := checkBatch(batch, s.cfg.VocabSize)
	if err != nil {
		return 0, 0, err
	}
	if err := s.uploadAdapters(true); err != nil {
		return 0, 0, err
	}
	var lossSum float64
	nTok := 0
	rowOff := int64(0)
	for _, c := range chunks(lens, s.maxTokens) {
		if err := ctxErr(); err != nil {
			return 0, 0, err
		}
		part := batch[c[0]:c[1]]
		ls, nt, err := s.lossGradPass(part, rowOff, seed)
		if err != nil {
			return 0, 0, err
		}
		lossSum += ls
		nTok += nt
		for _, ex := range part {
			rowOff += int64(len(ex.Tokens))
		}
	}
	for _, m := range s.mods {
		for _, g := range []struct {
			p *engine.Param
			b B
		}{{m.a, m.da}, {m.b, m.db}} {
			v, err := s.be.download(g.b, len(g.p.Grad))
			if err != nil {
				return 0, 0, err
			}
			for i, x := range v {
				g.p.Grad[i] += x
			}
		}
	}
	return lossSum, nTok, nil
}

// uploadAdapters copies the adapters' current values in (rounded to the
// storage type) and, with zeroGrads, clears their gradients.
func (s *stepper[B]) uploadAdapters(zeroGrads bool) error {
	for _, m := range s.mods {
		if err := errors.Join(s.be.upload(m.ae, m.a.Value, kElem), s.be.upload(m.be, m.b.Value, kElem)); err != nil {
			return err
		}
		if zeroGrads {
			if err := errors.Join(s.be.zero(m.da, len(m.a.Value)), s.be.zero(m.db, len(m.b.Value))); err != nil {
				return err
			}
		}
	}
	return nil
}

// lossGradPass runs one packed group of examples: forward keeping each
// layer's input, the loss at the labelled rows, and the backward pass with
// each layer recomputed.
func (s *stepper[B]) lossGradPass(batch []engine.Example, rowOff int64, seed uint64) (float64, int, error) {
	cfg, be := s.cfg, s.be
	D := cfg.HiddenSize
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
		return 0, 0, nil // nothing to learn; the masks of later passes depend only on rowOff
	}
	a := &bufArena[B]{be: be}
	defer a.release()
	p := s.newPass(a, seqs, rowOff)
	n := p.n
	xs := make([]B, cfg.NumHiddenLayers+1)
	for i := range xs {
		xs[i] = a.alloc(n*D, kFloat)
	}
	if a.err != nil {
		return 0, 0, a.err
	}
	if err := be.embed(xs[0], s.embed, p.ids, n, D, cfg.VocabSize); err != nil {
		return 0, 0, err
	}
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		la := &bufArena[B]{be: be}
		var acts layerActs[B]
		err := s.layerForward(la, p, &acts, l, xs[l], xs[l+1], true, true, seed)
		la.release()
		if err != nil {
			return 0, 0, err
		}
	}
	vc := min(s.vocabChunk, cfg.VocabSize)
	idb, lb := a.ints(idx), a.ints(labels)
	xr, hr := a.alloc(R*D, kFloat), a.alloc(R*D, kElem)
	dh, dxr := a.zeros(R*D), a.zeros(R*D)
	loss := a.alloc(R, kFloat)
	z, dz := a.alloc(R*vc, kFloat), a.alloc(R*vc, kElem)
	m, sm, zlab, lse := a.alloc(R, kFloat), a.alloc(R, kFloat), a.alloc(R, kFloat), a.alloc(R, kFloat)
	dx := a.zeros(n * D)
	if a.err != nil {
		return 0, 0, a.err
	}
	last := xs[cfg.NumHiddenLayers]
	for _, st := range []func() error{
		func() error { return be.gatherRows(xr, last, idb, R, D) },
		func() error { return be.rmsnorm(hr, xr, s.norm, R, D, cfg.RMSNormEps) },
		func() error {
			return crossEntropyOn(be, loss, dh, hr, s.head, lb, z, dz, m, sm, zlab, lse, R, cfg.VocabSize, D, vc, s.seedScale())
		},
		func() error { return be.rmsnormBwd(dxr, dh, xr, s.norm, R, D, cfg.RMSNormEps) },
		func() error { return be.scatterAddRows(dx, dxr, idb, R, D) },
	} {
		if err := st(); err != nil {
			return 0, 0, fmt.Errorf("cuda: loss: %w", err)
		}
	}
	lossRows, err := be.download(loss, R)
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
		if err := s.layerBackward(p, l, xs[l], dx, seed); err != nil {
			return 0, 0, err
		}
	}
	return sum, R, nil
}

// seedScale is the factor of the loss gradient the backward pass starts from.
func (s *stepper[B]) seedScale() float32 {
	if s.lossScale == 0 {
		return 1
	}
	return float32(s.lossScale)
}

// forward runs seqs (one packed group) through the layers with the
// adapters (no dropout) and hands the final float residual stream to head.
func (s *stepper[B]) forward(seqs [][]int, head func(x, cu B, n, nb int) ([]float32, int, error)) ([]float32, int, error) {
	a := &bufArena[B]{be: s.be}
	defer a.release()
	p := s.newPass(a, seqs, 0)
	x := a.alloc(p.n*s.cfg.HiddenSize, kFloat)
	if a.err != nil {
		return nil, 0, a.err
	}
	if err := s.be.embed(x, s.embed, p.ids, p.n, s.cfg.HiddenSize, s.cfg.VocabSize); err != nil {
		return nil, 0, err
	}
	for l := 0; l < s.cfg.NumHiddenLayers; l++ {
		la := &bufArena[B]{be: s.be}
		var acts layerActs[B]
		err := s.layerForward(la, p, &acts, l, x, x, true, false, 0)
		la.release()
		if err != nil {
			return nil, 0, err
		}
	}
	return head(x, p.cu, p.n, p.nb)
}

// newStepMods makes the adapters' buffers on be from their specs.
func newStepMods[B any](be backend[B], specs []loraSpec) ([]*stepMod[B], map[modKey]*stepMod[B], error) {
	var mods []*stepMod[B]
	byKey := map[modKey]*stepMod[B]{}
	a := &bufArena[B]{be: be}
	for i, sp := range specs {
		m := &stepMod[B]{loraSpec: sp, idx: i}
		na, nb := sp.rank*sp.in, sp.out*sp.rank
		m.ae, m.be, m.da, m.db = a.alloc(na, kElem), a.alloc(nb, kElem), a.alloc(na, kFloat), a.alloc(nb, kFloat)
		mods = append(mods, m)
		byKey[modKey{sp.layer, sp.module}] = m
	}
	if a.err != nil {
		a.release()
		return nil, nil, a.err
	}
	return mods, byKey, nil
}

// freeStepMods frees the adapters' buffers.
func freeStepMods[B any](be backend[B], mods []*stepMod[B]) {
	for _, m := range mods {
		for _, b := range []B{m.ae, m.be, m.da, m.db} {
			be.free(b)
		}
	}
}
