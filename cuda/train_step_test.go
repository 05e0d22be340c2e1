package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

// hostBuf is a buffer of the host backend: float values (float and elem
// buffers, elem ones rounded to the storage type on every write), ints or
// bytes. A view shares the values of its parent.
type hostBuf struct {
	k bufKind
	f []float32
	i []int
	b []byte
}

// hostBackend runs the training step on the CPU with the references (and
// the Go transliterations of the attention, cross-entropy and dropout
// kernels), rounding every write into an elem buffer as the device would.
// New buffers are NaN, so a value read before it is written spreads NaN.
type hostBackend struct{ e Elem }

var _ backend[*hostBuf] = hostBackend{}

func (h hostBackend) elem() Elem { return h.e }

func (h hostBackend) alloc(n int, k bufKind) (*hostBuf, error) {
	b := &hostBuf{k: k}
	switch k {
	case kInt:
		b.i = make([]int, n)
	case kByte:
		b.b = make([]byte, n)
	default:
		b.f = nanSlice(n)
	}
	return b, nil
}

func (h hostBackend) free(*hostBuf) {}

func (h hostBackend) zero(b *hostBuf, n int) error {
	clear(b.f[:n])
	return nil
}

func (h hostBackend) uploadInts(v []int) (*hostBuf, error) {
	return &hostBuf{k: kInt, i: append([]int(nil), v...)}, nil
}

// set writes v into b, rounded when b is elem.
func (h hostBackend) set(b *hostBuf, v []float32) {
	if b.k == kElem {
		v = h.e.Round(v)
	}
	copy(b.f, v)
}

func (h hostBackend) upload(b *hostBuf, v []float32, k bufKind) error {
	h.set(b, v)
	return nil
}

func (h hostBackend) download(b *hostBuf, n int) ([]float32, error) {
	return append([]float32(nil), b.f[:n]...), nil
}

func (h hostBackend) copyFloats(dst, src *hostBuf, n int) error {
	copy(dst.f[:n], src.f[:n])
	return nil
}

func (h hostBackend) view(b *hostBuf, off, n int, k bufKind) (*hostBuf, error) {
	if off+n > len(b.f) {
		return nil, fmt.Errorf("view [%d, %d) of %d values", off, off+n, len(b.f))
	}
	return &hostBuf{k: k, f: b.f[off : off+n]}, nil
}

// gemm evaluates the cuBLAS call the device would make (g, from
// RowMajorGemm) with column-major semantics on the row-major operands, so
// the argument mapping itself is under test: a wrong leading dimension or
// transposition flag is rejected (as cuBLAS's CUBLAS_STATUS_INVALID_VALUE)
// or gives a wrong product.
func (h hostBackend) gemm(g GemmCall, left, right, c *hostBuf, ck bufKind) error {
	out := append([]float32(nil), c.f...)
	if err := EvalRowMajor(g, left.f, right.f, out); err != nil {
		return err
	}
	h.set(c, out)
	return nil
}

func (h hostBackend) embed(x, table, ids *hostBuf, n, d, vocab int) error {
	h.set(x, EmbedRef(table.f, d, ids.i[:n]))
	return nil
}

func (h hostBackend) rmsnorm(out, x, w *hostBuf, n, d int, eps float64) error {
	h.set(out, RMSNormRef(x.f[:n*d], w.f, n, d, eps))
	return nil
}

func (h hostBackend) rmsnormBwd(dx, dy, x, w *hostBuf, n, d int, eps float64) error {
	for i, g := range RMSNormBwdRef(x.f[:n*d], w.f, dy.f[:n*d], n, d, eps) {
		dx.f[i] += g
	}
	return nil
}

func (h hostBackend) rope(x, pos *hostBuf, n, heads, hd int, theta float64) error {
	h.set(x, RoPERef(x.f[:n*heads*hd], pos.i[:n], heads, hd, theta))
	return nil
}

func (h hostBackend) ropeBwd(x, pos *hostBuf, n, heads, hd int, theta float64) error {
	h.set(x, RoPEBwdRef(x.f[:n*heads*hd], pos.i[:n], heads, hd, theta))
	return nil
}

func (h hostBackend) attentionFwd(o, lse, q, k, v, cu *hostBuf, nb, maxLen, H, KV, hd int) error {
	out, l := attentionFwdSim(q.f, k.f, v.f, cu.i[:nb+1], H, KV, hd)
	h.set(o, out)
	h.set(lse, l)
	return nil
}

func (h hostBackend) attentionBwdPre(dd, o, dout *hostBuf, n, H, hd int) error {
	h.set(dd, AttentionBwdPreRef(o.f[:n*H*hd], dout.f[:n*H*hd], n, H, hd))
	return nil
}

func (h hostBackend) attentionBwdDQ(dq, q, k, v, dout, lse, dd, cu *hostBuf, nb, maxLen, H, KV, hd int) error {
	h.set(dq, attentionBwdDQSim(q.f, k.f, v.f, dout.f, lse.f, dd.f, cu.i[:nb+1], H, KV, hd))
	return nil
}

func (h hostBackend) attentionBwdDKV(dk, dv, q, k, v, dout, lse, dd, cu *hostBuf, nb, maxLen, H, KV, hd int) error {
	gk, gv := attentionBwdDKVSim(q.f, k.f, v.f, dout.f, lse.f, dd.f, cu.i[:nb+1], H, KV, hd)
	h.set(dk, gk)
	h.set(dv, gv)
	return nil
}

func (h hostBackend) swiglu(out, g, u *hostBuf, n int) error {
	h.set(out, SwiGLURef(g.f[:n], u.f[:n]))
	return nil
}

func (h hostBackend) swigluBwd(dg, du, g, u, dy *hostBuf, n int) error {
	a, b := SwiGLUBwdRef(g.f[:n], u.f[:n], dy.f[:n]) // both read before either is written: dg may alias g
	h.set(dg, a)
	h.set(du, b)
	return nil
}

func (h hostBackend) residualAdd(x, y *hostBuf, n int) error {
	for i := 0; i < n; i++ {
		x.f[i] += y.f[i]
	}
	return nil
}

func (h hostBackend) castElem(out, x *hostBuf, n int) error {
	h.set(out, x.f[:n])
	return nil
}

func (h hostBackend) dropoutMask(keep *hostBuf, seed, stream uint64, first, n int64, p float64) error {
	copy(keep.b, dropoutMaskSim(seed, stream, first, n, DropoutThreshold(p)))
	return nil
}

func (h hostBackend) dropoutApply(out, x, keep *hostBuf, n int, p float64) error {
	v := make([]float32, n)
	for i := range v {
		if keep.b[i] != 0 {
			v[i] = x.f[i] * float32(1/(1-p))
		}
	}
	h.set(out, v)
	return nil
}

func (h hostBackend) maskMulAdd(dx, g, keep *hostBuf, n int, p float64) error {
	for i := 0; i < n; i++ {
		if keep.b[i] != 0 {
			dx.f[i] += g.f[i] * float32(1/(1-p))
		}
	}
	return nil
}

func (h hostBackend) gatherRows(out, x, idx *hostBuf, R, d int) error {
	for r := 0; r < R; r++ {
		copy(out.f[r*d:(r+1)*d], x.f[idx.i[r]*d:])
	}
	return nil
}

func (h hostBackend) scatterAddRows(dx, g, idx *hostBuf, R, d int) error {
	for r := 0; r < R; r++ {
		for c := 0; c < d; c++ {
			dx.f[idx.i[r]*d+c] += g.f[r*d+c]
		}
	}
	return nil
}

// ceStats transliterates the kernel (float32, one row at a time).
func (h hostBackend) ceStats(m, s, zlab, z, labels *hostBuf, R, vc, v0 int) error {
	for r := 0; r < R; r++ {
		zr := z.f[r*vc : (r+1)*vc]
		mx := float32(math.Inf(-1))
		for _, x := range zr {
			mx = max(mx, x)
		}
		var sum float32
		for _, x := range zr {
			sum += expf(x - mx)
		}
		m0, s0 := m.f[r], s.f[r]
		if v0 == 0 {
			m0, s0 = float32(math.Inf(-1)), 0
		}
		mn := max(m0, mx)
		s.f[r] = s0*expf(m0-mn) + sum*expf(mx-mn)
		m.f[r] = mn
		if lab := labels.i[r]; lab >= v0 && lab < v0+vc {
			zlab.f[r] = zr[lab-v0]
		}
	}
	return nil
}

func (h hostBackend) ceFinish(lse, loss, m, s, zlab *hostBuf, R int) error {
	for r := 0; r < R; r++ {
		lse.f[r] = m.f[r] + float32(math.Log(float64(s.f[r])))
		loss.f[r] = lse.f[r] - zlab.f[r]
	}
	return nil
}

func (h hostBackend) dequant(out, q, scale *hostBuf, rows, cols int) error {
	v := make([]int8, rows*cols)
	for i := range v {
		v[i] = int8(q.b[i])
	}
	h.set(out, DequantInt8Ref(v, scale.f[:rows], rows, cols, h.e))
	return nil
}

func (h hostBackend) ceGrad(dz, z, lse, labels *hostBuf, R, vc, v0 int, scale float32) error {
	h.set(dz, CEChunkRef(z.f[:R*vc], lse.f[:R], labels.i[:R], v0, float64(scale)))
	return nil
}

// hostStepper loads m into a stepper on the host backend with the adapters of params.
func hostStepper(t *testing.T, m *model.Model, e Elem, params []*engine.Param, scale, dropout float64, maxTokens, vocabChunk int) *stepper[*hostBuf] {
	t.Helper()
	return hostStepperFrom(t, m.Config, m.Tensor, e, params, scale, dropout, maxTokens, vocabChunk)
}

// hostStepperFrom is hostStepper over the tensors tensor returns.
func hostStepperFrom(t *testing.T, cfg model.Config, tensor func(string) ([]float32, error), e Elem, params []*engine.Param, scale, dropout float64, maxTokens, vocabChunk int) *stepper[*hostBuf] {
	t.Helper()
	be := hostBackend{e: e}
	get := func(name string) *hostBuf {
		v, err := tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := be.alloc(len(v), kElem)
		be.set(b, v)
		return b
	}
	s := &stepper[*hostBuf]{be: be, cfg: cfg, embed: get("model.embed_tokens.weight"), norm: get("model.norm.weight"),
		head: get("lm_head.weight"), scale: scale, dropout: dropout, vocabChunk: vocabChunk, maxTokens: maxTokens}
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		s.layers = append(s.layers, stepLayer[*hostBuf]{ln1: get(p + "input_layernorm.weight"), q: get(p + "self_attn.q_proj.weight"),
			k: get(p + "self_attn.k_proj.weight"), v: get(p + "self_attn.v_proj.weight"), o: get(p + "self_attn.o_proj.weight"),
			ln2: get(p + "post_attention_layernorm.weight"), gate: get(p + "mlp.gate_proj.weight"), up: get(p + "mlp.up_proj.weight"),
			down: get(p + "mlp.down_proj.weight")})
	}
	specs, err := parseLoRA(cfg, params)
	if err != nil {
		t.Fatal(err)
	}
	if s.mods, s.byKey, err = newStepMods[*hostBuf](be, specs); err != nil {
		t.Fatal(err)
	}
	return s
}

// storiesGreedy is llama2.c's greedy continuation of BOS on stories260K
// (reference.json): in-distribution text for natural training examples.
var storiesGreedy = []int{1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
	410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352}

// stepCase is a LoRA setup and batch on stories260K: adapters of rank 4 on
// every projection of layers 0, 2 and 4 (A ~ N(0, 0.1²), B ~ N(0, bStd²)),
// and five examples, the third without labels. natural takes prefixes of
// storiesGreedy labelled with their next tokens after the first third;
// otherwise random tokens and labels, 5..64 tokens (more attention tiles).
func stepCase(cfg model.Config, r *rand.Rand, natural bool, bStd float64) ([]*engine.Param, []engine.Example) {
	var params []*engine.Param
	for _, l := range []int{0, 2, 4} {
		for _, mod := range []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} {
			in, out, _ := moduleDims(cfg, mod)
			mk := func(ab string, rows, cols int, a float64) *engine.Param {
				v := make([]float32, rows*cols)
				for i := range v {
					v[i] = float32(r.NormFloat64() * a)
				}
				return &engine.Param{Name: fmt.Sprintf("base_model.model.model.layers.%d.%s.%s.lora_%s.weight", l, moduleGroup[mod], mod, ab),
					Shape: []int{rows, cols}, Value: v, Grad: make([]float32, len(v))}
			}
			params = append(params, mk("A", 4, in, 0.1), mk("B", out, 4, bStd))
		}
	}
	batch := make([]engine.Example, 5)
	for i := range batch {
		var ex engine.Example
		if natural {
			n := []int{41, 30, 17, 41, 25}[i]
			ex = engine.Example{Tokens: storiesGreedy[:n-1], Labels: append([]int(nil), storiesGreedy[1:n]...)}
			for j := range ex.Labels {
				if i == 2 || j < (n-1)/3 {
					ex.Labels[j] = engine.IgnoreIndex
				}
			}
		} else {
			n := 5 + r.IntN(60)
			ex = engine.Example{Tokens: make([]int, n), Labels: make([]int, n)}
			for j := range ex.Tokens {
				ex.Tokens[j] = r.IntN(cfg.VocabSize)
				ex.Labels[j] = engine.IgnoreIndex
				if i != 2 && j >= n/2 {
					ex.Labels[j] = r.IntN(cfg.VocabSize)
				}
			}
		}
		batch[i] = ex
	}
	return params, batch
}

// stepRef returns LossGradRef for the adapters of params (rounded to w, as
// the weights) with the dropout masks a step with seed draws.
func stepRef(t *testing.T, m *model.Model, w Elem, params []*engine.Param, batch []engine.Example, scale, p float64, seed uint64) ([]loraSpec, *StepRef) {
	t.Helper()
	specs, err := parseLoRA(m.Config, params)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, ex := range batch {
		total += len(ex.Tokens)
	}
	var mods []LoRAModuleRef
	for i, sp := range specs {
		var mask []float32
		if p > 0 {
			for _, k := range DropoutKeepRef(seed, uint64(i)+1, 0, int64(total*sp.in), p) {
				mask = append(mask, float32(k)*float32(1/(1-p)))
			}
		}
		mods = append(mods, LoRAModuleRef{Layer: sp.layer, Module: sp.module, Rank: sp.rank, A: w.Round(sp.a.Value), B: w.Round(sp.b.Value), Mask: mask})
	}
	ref, err := LossGradRef(m.Config, m.Tensor, w, scale, mods, batch)
	if err != nil {
		t.Fatal(err)
	}
	return specs, ref
}

// gradStats compares the gradients in specs' params with ref's: the worst
// relative error of one tensor, and the relative error and cosine of all
// of them concatenated.
func gradStats(specs []loraSpec, ref *StepRef) (worst, global, cosine float64) {
	var got, want []float32
	for i, sp := range specs {
		worst = max(worst, RelErr(sp.a.Grad, ref.DA[i]), RelErr(sp.b.Grad, ref.DB[i]))
		got = append(append(got, sp.a.Grad...), sp.b.Grad...)
		want = append(append(want, ref.DA[i]...), ref.DB[i]...)
	}
	var dot, gg, ww float64
	for i := range got {
		dot += float64(got[i]) * float64(want[i])
		gg += float64(got[i]) * float64(got[i])
		ww += float64(want[i]) * float64(want[i])
	}
	return worst, RelErr(got, want), dot / math.Sqrt(gg*ww)
}

// TestStepperMatchesLossGradRef runs the training step's algorithm (the
// code the GPU Trainer runs) on the host backend over stories260K with
// dropout 0.1, the batch split into passes of at most 100 tokens and the
// vocabulary into chunks of 200 rows, against LossGradRef (which cpucheck
// ties to the Gorgonia CPU engine).
//
// In f32 every LoRA gradient agrees to the float32 rounding of the
// kernels' arithmetic (about 2e-5). With bf16 storage emulated (weights,
// adapters and every activation or gradient that feeds a GEMM rounded to
// bf16, as on the device), on natural text, the loss agrees to 0.01 nats
// per token and all gradients together to about 3% with cosine 0.9997 against the f32
// reference; single tensors of this tiny model (d = 64) differ by up to
// about 5%, and rounding the weights alone already moves them by 2%. So
// GPU.md's "bf16 < 2e-2" cannot hold tensor by tensor here; the bf16
// bounds below (global 0.05, cosine 0.998) are what the design reaches.
func TestStepperMatchesLossGradRef(t *testing.T) {
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config
	const scale, p = 2.0, 0.1
	for _, c := range []struct {
		e       Elem
		natural bool
	}{{F32, false}, {F32, true}, {BF16, true}} {
		r := rand.New(rand.NewPCG(51, 52))
		bStd := 0.1 // random text: large adapters, every path carries gradient
		if c.natural {
			bStd = 0.02 // natural text: adapters of a model partly trained from B = 0
		}
		params, batch := stepCase(cfg, r, c.natural, bStd)
		seed := r.Uint64()
		s := hostStepper(t, m, c.e, params, scale, p, 100, 200)
		lossSum, nTok, err := s.lossGrad(batch, seed, func() error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		specs, ref := stepRef(t, m, F32, params, batch, scale, p, seed)
		worst, global, cosine := gradStats(specs, ref)
		name := fmt.Sprintf("%v natural=%v", c.e, c.natural)
		t.Logf("%s: loss %.5f (reference %.5f) over %d tokens; LoRA gradients: worst tensor %.2e, all %.2e, cosine %.7f",
			name, lossSum, ref.LossSum, nTok, worst, global, cosine)
		// The loss is compared per token in nats (a relative bound is loose
		// or tight depending on how well the model fits the text).
		lossTol, worstTol, globalTol, cosTol := 1e-5, 1e-4, 1e-4, 1-1e-8
		if c.e != F32 {
			lossTol, worstTol, globalTol, cosTol = 0.01, 0.1, 0.05, 0.998
		}
		if nTok != ref.Tokens || !(math.Abs(lossSum-ref.LossSum) <= lossTol*float64(nTok)) {
			t.Errorf("%s: loss %v over %d tokens, reference %v over %d", name, lossSum, nTok, ref.LossSum, ref.Tokens)
		}
		if !(worst <= worstTol && global <= globalTol && cosine >= cosTol) {
			t.Errorf("%s: gradients: worst tensor %.3g (bound %g), all %.3g (bound %g), cosine %.7f (bound %g)",
				name, worst, worstTol, global, globalTol, cosine, cosTol)
		}
		// A second call adds the same gradients again (LossGrad adds).
		before := append([]float32(nil), params[0].Grad...)
		if _, _, err := s.lossGrad(batch, seed, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		for i, g := range params[0].Grad {
			if d := g - 2*before[i]; math.Abs(float64(d)) > 1e-6*math.Abs(float64(g))+1e-12 {
				t.Fatalf("%s: second call: grad[%d] = %v, want twice %v", name, i, g, before[i])
			}
		}
	}
}

// TestStepperForward checks the adapted forward pass: with B = 0 the
// adapters add nothing, so the last-position logits must be ForwardRef's.
func TestStepperForward(t *testing.T) {
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config
	params, batch := stepCase(cfg, rand.New(rand.NewPCG(61, 62)), false, 0)
	s := hostStepper(t, m, F32, params, 2, 0.1, 1000, 512)
	if err := s.uploadAdapters(false); err != nil {
		t.Fatal(err)
	}
	seqs := make([][]int, len(batch))
	for i, ex := range batch {
		seqs[i] = ex.Tokens
	}
	want, _, err := ForwardRef(cfg, m.Tensor, F32, seqs)
	if err != nil {
		t.Fatal(err)
	}
	D, V := cfg.HiddenSize, cfg.VocabSize
	got, width, err := s.forward(seqs, func(x, cu *hostBuf, n, nb int) ([]float32, int, error) {
		last := GatherLastRef(x.f[:n*D], cu.i[:nb+1], D)
		all := make([]int, V)
		for i := range all {
			all[i] = i
		}
		return LMHeadRowsRef(RMSNormRef(last, s.norm.f, nb, D, cfg.RMSNormEps), s.head.f, all, D), V, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		if e := RelErr(got[i*width:(i+1)*width], want[i]); !(e < 1e-5) {
			t.Errorf("sequence %d: last logits relative error %.3g against ForwardRef", i, e)
		}
	}
}
