//go:build rellagpu

package cuda

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

var _ engine.Engine = (*Engine)(nil)

// layer holds one decoder layer's weights on the device. With int8 base
// weights (Options.Quantize) the seven projections hold int8 values and
// scales holds their float32 per-row scales, by module name.
type layer struct {
	ln1, q, k, v, o, ln2, gate, up, down Buffer
	scales                               map[string]Buffer
}

// projections lists a layer's projections: module name, HF tensor suffix
// and the field holding it.
func (l *layer) projections() []struct {
	module, name string
	buf          *Buffer
} {
	return []struct {
		module, name string
		buf          *Buffer
	}{{"q_proj", "self_attn.q_proj", &l.q}, {"k_proj", "self_attn.k_proj", &l.k}, {"v_proj", "self_attn.v_proj", &l.v},
		{"o_proj", "self_attn.o_proj", &l.o}, {"gate_proj", "mlp.gate_proj", &l.gate}, {"up_proj", "mlp.up_proj", &l.up},
		{"down_proj", "mlp.down_proj", &l.down}}
}

// Engine runs a LLaMA checkpoint's forward pass on one GPU for scoring
// (LastLogits) and item embeddings (MeanHidden). Weights live on the device
// in bf16 (fp16 on sm_70, or float32 when asked); the residual stream is
// float32 and every GEMM accumulates in float32. Sequences of a call are
// packed without padding into passes of at most Options.MaxTokens tokens.
type Engine struct {
	cfg       model.Config
	elem      Elem
	maxTokens int
	dev       *Device
	mod       *Module
	blas      *BLAS
	o         ops
	embed     Buffer // [V, d]
	norm      Buffer // [d]
	head      Buffer // [V, d] (the embeddings when tied)
	layers    []layer
	log       *slog.Logger
	quant     string // model.quantize: "" or "int8"
	deq       Buffer // int8: the elem buffer every projection is dequantised into before its GEMM
}

// NewEngine loads m onto device deviceIndex in the device's natural half
// precision. See NewEngineWith.
func NewEngine(m *model.Model, deviceIndex int, log *slog.Logger) (*Engine, error) {
	return NewEngineWith(m, Options{Device: deviceIndex}, log)
}

// NewEngineWith loads m's weights onto the GPU, converting each tensor to
// the storage type on the fly, after checking that weights and a forward
// pass of opts.MaxTokens tokens fit in the device's free memory.
func NewEngineWith(m *model.Model, opts Options, log *slog.Logger) (*Engine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := m.Config
	if err := CheckConfig(cfg); err != nil {
		return nil, err
	}
	dev, err := OpenDevice(opts.Device, log)
	if err != nil {
		return nil, err
	}
	e, ok, err := ParsePrecision(opts.Precision)
	if err != nil {
		dev.Close()
		return nil, err
	}
	if !ok {
		e = ElemFor(dev.Major, dev.Minor)
	}
	if e == BF16 && dev.Major < 8 {
		dev.Close()
		return nil, fmt.Errorf("cuda: %s (sm_%d%d) has no bf16; use precision f16", dev.Name, dev.Major, dev.Minor)
	}
	if err := model.CheckQuantization(opts.Quantize); err != nil {
		dev.Close()
		return nil, fmt.Errorf("cuda: %w", err)
	}
	quant := opts.Quantize
	if quant == "none" {
		quant = ""
	}
	en := &Engine{cfg: cfg, elem: e, maxTokens: opts.MaxTokens, dev: dev, log: log, quant: quant}
	if en.maxTokens <= 0 {
		en.maxTokens = DefaultMaxTokens
	}
	if err := dev.Do(func() error { return en.load(m, opts.Reserve) }); err != nil {
		en.Close()
		return nil, err
	}
	return en, nil
}

// load checks memory (weights, the forward workspace and reserve: the
// Trainer's workspace), compiles the kernels and uploads the weights,
// quantising the projections first with int8 (on the device thread).
func (en *Engine) load(m *model.Model, reserve int64) error {
	d := en.dev
	free, total, err := d.MemInfo()
	if err != nil {
		return err
	}
	wb := QuantizedWeightBytes(en.cfg, en.elem, en.quant)
	ws := WorkspaceBytes(en.cfg, en.maxTokens, 256, en.elem)
	kind := en.elem.String()
	if en.quant != "" {
		kind += ", projections " + en.quant
	}
	if need := wb + ws + reserve; need > free {
		return fmt.Errorf("cuda: model does not fit on device %d (%s): needs %.2f GiB (weights %.2f GiB in %s + workspace %.2f GiB for %d tokens + training %.2f GiB), %.2f GiB free of %.2f GiB; see docs/memory.md",
			d.Index, d.Name, gib(need), gib(wb), kind, gib(ws), en.maxTokens, gib(reserve), gib(free), gib(total))
	}
	en.log.Info("cuda memory plan", "weights_gib", fmt.Sprintf("%.2f", gib(wb)), "weights", kind,
		"workspace_gib", fmt.Sprintf("%.2f", gib(ws)), "training_gib", fmt.Sprintf("%.2f", gib(reserve)),
		"free_gib", fmt.Sprintf("%.2f", gib(free)), "total_gib", fmt.Sprintf("%.2f", gib(total)))
	start := time.Now()
	if en.mod, err = d.LoadKernels(en.elem); err != nil {
		return err
	}
	en.o = ops{d, en.mod}
	if en.blas, err = d.NewBLAS(); err != nil {
		return err
	}
	en.log.Info("cuda kernels ready", "elem", en.elem, "cublas", en.blas.Version, "took", time.Since(start).Round(time.Millisecond))
	up := func(name string) (Buffer, error) {
		v, err := m.Tensor(name)
		if err != nil {
			return Buffer{}, err
		}
		if want := shapeElems(m.Shape(name)); want > 0 && want != len(v) {
			return Buffer{}, fmt.Errorf("cuda: tensor %s has %d values, want %d", name, len(v), want)
		}
		b, err := d.uploadFloats(v, en.elem)
		if err != nil {
			return Buffer{}, fmt.Errorf("cuda: upload %s: %w", name, err)
		}
		return b, nil
	}
	if en.embed, err = up("model.embed_tokens.weight"); err != nil {
		return err
	}
	if en.norm, err = up("model.norm.weight"); err != nil {
		return err
	}
	if en.cfg.TieWordEmbeddings {
		en.head = en.embed
	} else if en.head, err = up("lm_head.weight"); err != nil {
		return err
	}
	upQuant := func(name string) (Buffer, Buffer, error) {
		q, err := m.QuantizedTensor(name)
		if err != nil {
			return Buffer{}, Buffer{}, err
		}
		qb, err := d.Alloc(int64(len(q.Q)))
		if err != nil {
			return Buffer{}, Buffer{}, err
		}
		if err := d.Upload(qb, int8Bytes(q.Q)); err != nil {
			d.Free(qb)
			return Buffer{}, Buffer{}, fmt.Errorf("cuda: upload %s: %w", name, err)
		}
		sb, err := d.uploadFloats(q.Scale, F32)
		if err != nil {
			d.Free(qb)
			return Buffer{}, Buffer{}, fmt.Errorf("cuda: upload %s scales: %w", name, err)
		}
		return qb, sb, nil
	}
	if en.quant != "" {
		if en.deq, err = d.Alloc(DequantBufferBytes(en.cfg, en.elem, en.quant)); err != nil {
			return err
		}
	}
	for i := 0; i < en.cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		var l layer
		if en.quant != "" {
			l.scales = map[string]Buffer{}
			for _, pr := range l.projections() {
				q, s, err := upQuant(p + pr.name + ".weight")
				if err != nil {
					return err
				}
				*pr.buf, l.scales[pr.module] = q, s
			}
			for _, t := range []struct {
				dst  *Buffer
				name string
			}{{&l.ln1, "input_layernorm"}, {&l.ln2, "post_attention_layernorm"}} {
				if *t.dst, err = up(p + t.name + ".weight"); err != nil {
					return err
				}
			}
			en.layers = append(en.layers, l)
			continue
		}
		for _, t := range []struct {
			dst  *Buffer
			name string
		}{{&l.ln1, "input_layernorm"}, {&l.q, "self_attn.q_proj"}, {&l.k, "self_attn.k_proj"}, {&l.v, "self_attn.v_proj"},
			{&l.o, "self_attn.o_proj"}, {&l.ln2, "post_attention_layernorm"}, {&l.gate, "mlp.gate_proj"},
			{&l.up, "mlp.up_proj"}, {&l.down, "mlp.down_proj"}} {
			if *t.dst, err = up(p + t.name + ".weight"); err != nil {
				return err
			}
		}
		en.layers = append(en.layers, l)
	}
	if err := d.Sync(); err != nil {
		return err
	}
	en.log.Info("cuda weights loaded", "gib", fmt.Sprintf("%.2f", gib(wb)), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func shapeElems(s []int) int {
	if len(s) == 0 {
		return 0
	}
	n := 1
	for _, v := range s {
		n *= v
	}
	return n
}

// Close frees the device and everything on it.
func (en *Engine) Close() error {
	if en.dev == nil {
		return nil
	}
	en.dev.Do(func() error {
		bufs := []Buffer{en.embed, en.norm}
		if !en.cfg.TieWordEmbeddings {
			bufs = append(bufs, en.head)
		}
		for _, l := range en.layers {
			bufs = append(bufs, l.ln1, l.q, l.k, l.v, l.o, l.ln2, l.gate, l.up, l.down)
			for _, s := range l.scales {
				bufs = append(bufs, s)
			}
		}
		if en.deq.size > 0 {
			bufs = append(bufs, en.deq)
		}
		for _, b := range bufs {
			en.dev.Free(b)
		}
		if en.blas != nil {
			en.blas.Destroy()
		}
		if en.mod != nil {
			en.mod.Unload()
		}
		return nil
	})
	err := en.dev.Close()
	en.dev = nil
	return err
}

// LastLogits returns each sequence's logits at its last token, for the
// vocabulary rows given (all rows when rows is nil).
func (en *Engine) LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error) {
	for _, r := range rows {
		if r < 0 || r >= en.cfg.VocabSize {
			return nil, fmt.Errorf("cuda: logits row %d outside vocabulary of %d", r, en.cfg.VocabSize)
		}
	}
	return en.run(ctx, seqs, func(x, cu Buffer, n, B int) ([]float32, int, error) { return en.lastLogits(x, cu, B, rows) })
}

// MeanHidden returns each sequence's final-norm hidden states averaged over its tokens.
func (en *Engine) MeanHidden(ctx context.Context, seqs [][]int) ([][]float32, error) {
	return en.run(ctx, seqs, func(x, cu Buffer, n, B int) ([]float32, int, error) { return en.meanHidden(x, cu, n, B) })
}

// run validates seqs, packs them into passes, runs the decoder on each and
// lets head turn the final residual stream x [n, d] into B rows of width w.
func (en *Engine) run(ctx context.Context, seqs [][]int, head func(x, cu Buffer, n, B int) ([]float32, int, error)) ([][]float32, error) {
	lens := make([]int, len(seqs))
	for i, s := range seqs {
		if len(s) == 0 {
			return nil, fmt.Errorf("cuda: sequence %d is empty", i)
		}
		for _, id := range s {
			if id < 0 || id >= en.cfg.VocabSize {
				return nil, fmt.Errorf("cuda: sequence %d: token id %d outside vocabulary of %d", i, id, en.cfg.VocabSize)
			}
		}
		lens[i] = len(s)
	}
	out := make([][]float32, 0, len(seqs))
	for _, c := range chunks(lens, en.maxTokens) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var flat []float32
		var width int
		err := en.dev.Do(func() error {
			var err error
			flat, width, err = en.pass(seqs[c[0]:c[1]], head)
			return err
		})
		if err != nil {
			return nil, err
		}
		for i := 0; i < c[1]-c[0]; i++ {
			out = append(out, flat[i*width:(i+1)*width:(i+1)*width])
		}
	}
	return out, nil
}

// pass runs the decoder over one packed group of sequences (device thread).
func (en *Engine) pass(seqs [][]int, head func(x, cu Buffer, n, B int) ([]float32, int, error)) (res []float32, width int, err error) {
	d, cfg, o, e := en.dev, en.cfg, en.o, en.elem
	var held []Buffer
	defer func() {
		for _, b := range held {
			d.Free(b)
		}
	}()
	alloc := func(n int64) Buffer {
		if err != nil {
			return Buffer{}
		}
		var b Buffer
		b, err = d.Alloc(n)
		held = append(held, b)
		return b
	}
	lens := make([]int, len(seqs))
	var ids []int
	maxLen := 0
	for i, s := range seqs {
		lens[i] = len(s)
		maxLen = max(maxLen, len(s))
		ids = append(ids, s...)
	}
	cuHost := Offsets(lens)
	n, B := len(ids), len(seqs)
	D, Q, KV, FF := cfg.HiddenSize, cfg.QDim(), cfg.KVDim(), cfg.IntermediateSize
	es := int64(e.Size())
	idb, err := d.uploadInts(ids)
	if err != nil {
		return nil, 0, err
	}
	held = append(held, idb)
	posb, err := d.uploadInts(Positions(cuHost))
	if err != nil {
		return nil, 0, err
	}
	held = append(held, posb)
	cub, err := d.uploadInts(cuHost)
	if err != nil {
		return nil, 0, err
	}
	held = append(held, cub)
	x := alloc(int64(n*D) * 4)
	h := alloc(int64(n*D) * es)
	q := alloc(int64(n*Q) * es)
	k := alloc(int64(n*KV) * es)
	v := alloc(int64(n*KV) * es)
	a := alloc(int64(n*Q) * es)
	y := alloc(int64(n*D) * es)
	g := alloc(int64(n*FF) * es)
	u := alloc(int64(n*FF) * es)
	if err != nil {
		return nil, 0, err
	}
	mat := func(b Buffer) Mat { return Mat{Buf: b, Type: e} }
	// w returns the GEMM operand of a projection: its weight, or with int8
	// base weights the weight dequantised into en.deq ([rows, cols] =
	// [out, in]), which the next GEMM reads before anything overwrites it
	// (one stream).
	w := func(l *layer, module string, b Buffer, rows, cols int) (Mat, error) {
		if en.quant == "" {
			return mat(b), nil
		}
		return mat(en.deq), o.dequantInt8(en.deq, b, l.scales[module], rows, cols)
	}
	linear := func(y Buffer, x Buffer, l *layer, module string, wb Buffer, rows, in, out int) error {
		wm, err := w(l, module, wb, out, in)
		if err != nil {
			return err
		}
		return en.blas.Linear(mat(y), mat(x), wm, rows, in, out, 0)
	}
	steps := []func() error{func() error { return o.embed(x, en.embed, idb, n, D, cfg.VocabSize) }}
	for i := range en.layers {
		l := &en.layers[i]
		steps = append(steps,
			func() error { return o.rmsnorm(h, x, l.ln1, n, D, cfg.RMSNormEps) },
			func() error { return linear(q, h, l, "q_proj", l.q, n, D, Q) },
			func() error { return linear(k, h, l, "k_proj", l.k, n, D, KV) },
			func() error { return linear(v, h, l, "v_proj", l.v, n, D, KV) },
			func() error { return o.rope(q, posb, n, cfg.NumAttentionHeads, cfg.HeadDim, cfg.RopeTheta) },
			func() error { return o.rope(k, posb, n, cfg.NumKeyValueHeads, cfg.HeadDim, cfg.RopeTheta) },
			func() error {
				return o.attention(a, q, k, v, cub, B, maxLen, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim)
			},
			func() error { return linear(y, a, l, "o_proj", l.o, n, Q, D) },
			func() error { return o.residualAdd(x, y, int64(n*D)) },
			func() error { return o.rmsnorm(h, x, l.ln2, n, D, cfg.RMSNormEps) },
			func() error { return linear(g, h, l, "gate_proj", l.gate, n, D, FF) },
			func() error { return linear(u, h, l, "up_proj", l.up, n, D, FF) },
			func() error { return o.swiglu(g, g, u, int64(n*FF)) },
			func() error { return linear(y, g, l, "down_proj", l.down, n, FF, D) },
			func() error { return o.residualAdd(x, y, int64(n*D)) },
		)
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, 0, err
		}
	}
	return head(x, cub, n, B)
}

// lastLogits: final norm of each sequence's last row, then the LM head
// (restricted to rows, or a full GEMM) in float32 (device thread).
func (en *Engine) lastLogits(x, cu Buffer, B int, rows []int) ([]float32, int, error) {
	d, o, e, D := en.dev, en.o, en.elem, en.cfg.HiddenSize
	var held []Buffer
	defer func() {
		for _, b := range held {
			d.Free(b)
		}
	}()
	get := func(n int64) (Buffer, error) {
		b, err := d.Alloc(n)
		if err == nil {
			held = append(held, b)
		}
		return b, err
	}
	xl, err := get(int64(B*D) * 4)
	if err != nil {
		return nil, 0, err
	}
	hl, err := get(int64(B*D) * int64(e.Size()))
	if err != nil {
		return nil, 0, err
	}
	if err := o.gatherLast(xl, x, cu, B, D); err != nil {
		return nil, 0, err
	}
	if err := o.rmsnorm(hl, xl, en.norm, B, D, en.cfg.RMSNormEps); err != nil {
		return nil, 0, err
	}
	width := len(rows)
	if rows == nil {
		width = en.cfg.VocabSize
	}
	out, err := get(int64(B*width) * 4)
	if err != nil {
		return nil, 0, err
	}
	if rows != nil {
		rb, err := d.uploadInts(rows)
		if err != nil {
			return nil, 0, err
		}
		held = append(held, rb)
		err = o.lmHeadRows(out, hl, en.head, rb, B, len(rows), D)
		if err != nil {
			return nil, 0, err
		}
	} else if err := en.blas.Linear(Mat{Buf: out, Type: F32}, Mat{Buf: hl, Type: e}, Mat{Buf: en.head, Type: e}, B, D, width, 0); err != nil {
		return nil, 0, err
	}
	res, err := d.downloadFloats(out, B*width, F32)
	return res, width, err
}

// meanHidden: final norm of every row, then the mean over each sequence (device thread).
func (en *Engine) meanHidden(x, cu Buffer, n, B int) ([]float32, int, error) {
	d, o, D := en.dev, en.o, en.cfg.HiddenSize
	h, err := d.Alloc(int64(n*D) * int64(en.elem.Size()))
	if err != nil {
		return nil, 0, err
	}
	defer d.Free(h)
	out, err := d.Alloc(int64(B*D) * 4)
	if err != nil {
		return nil, 0, err
	}
	defer d.Free(out)
	if err := o.rmsnorm(h, x, en.norm, n, D, en.cfg.RMSNormEps); err != nil {
		return nil, 0, err
	}
	if err := o.meanPool(out, h, cu, B, D); err != nil {
		return nil, 0, err
	}
	res, err := d.downloadFloats(out, B*D, F32)
	return res, D, err
}

// Elem is the storage type the engine runs in.
func (en *Engine) Elem() Elem { return en.elem }

// Device is the GPU the engine runs on.
func (en *Engine) Device() *Device { return en.dev }
