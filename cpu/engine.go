// Package cpu runs a LLaMA decoder on the CPU as a Gorgonia expression graph:
// the reference forward pass (embedding, RMSNorm, rotary embeddings, causal
// grouped-query attention, SwiGLU MLP, final norm, LM head), LoRA adapters on
// any projection, and the causal-LM loss with gradients for the adapters.
// It implements engine.Engine and engine.Trainer; the GPU engine is checked
// against it.
package cpu

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/rella-project/rella/cpu/internal/gemm"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// Options configures an Engine.
type Options struct {
	DType    string // "float32" (default) or "float64"
	LoRA     *LoRA  // nil = no adapters
	MaxBatch int    // sequences per graph run (default 8); callers may pass more, they are split
	// MaxTokens bounds batch × padded length per graph run (default 8192),
	// which bounds a graph's memory; a longer single sequence still runs alone.
	MaxTokens int
	// Quantize is model.quantize: "" or "none" (weights as stored) or
	// "int8": the seven projection weights of every layer are quantised at
	// load time (model.QuantizeInt8, absmax per output row) and the GEMMs
	// use their dequantised values, float32(q)*scale, exactly the operand
	// the GPU's dequantise kernel produces before rounding it to the
	// storage type. This engine is the reference for int8 results; it keeps
	// the dequantised float32 matrices, so it saves no memory.
	Quantize string
	// BLAS picks the GEMM: "auto" (an optimised CBLAS library such as
	// Debian's libopenblas0-pthread when one loads, else gonum's pure Go),
	// "none" (gonum), or the absolute path of a library exporting
	// cblas_sgemm and cblas_dgemm. Empty means $RELLA_BLAS, and "auto"
	// when that is unset. Both paths agree within float rounding.
	BLAS string
	// Log receives one line naming the GEMM in use; nil discards it.
	Log *slog.Logger
}

// LoRA describes the adapters: y = W·x + Scale·B·A·dropout(x) on every
// module that has a lora_A/lora_B pair among Params.
type LoRA struct {
	Scale   float64 // alpha / r
	Dropout float64 // on the adapter input, training only
	Params  []*engine.Param
}

const (
	rowMultiple = 8 // labelled positions per run are padded to a multiple of this
	maxGraphs   = 4 // graphs kept per kind (inference, training)
)

// padLen is the padded length of a run whose longest sequence has n tokens:
// a multiple of 16 up to 256 and of 64 beyond, so few graphs serve all lengths.
func padLen(n int) int {
	if n <= 256 {
		return roundUp(n, 16)
	}
	return roundUp(n, 64)
}

// chunkSize is how many sequences of padded length T one run takes.
func (e *Engine) chunkSize(T int) int {
	return max(1, min(e.opts.MaxBatch, e.opts.MaxTokens/T))
}

// Engine is the Gorgonia CPU engine. It is safe for use by one goroutine at
// a time per call (calls are serialised internally).
type Engine struct {
	cfg  model.Config
	dt   tensor.Dtype
	opts Options
	mm   gemm.GEMM // every matrix product of the graphs

	embed     []float32     // [V, D]
	head      *tensor.Dense // [V, D] in dt
	finalNorm []float64
	layers    []layerWeights
	mods      []*loraModule // in Params order of their A matrices

	mu     sync.Mutex
	graphs map[graphKey]*graph
	lru    []graphKey
}

type layerWeights struct {
	attnNorm, mlpNorm []float64
	proj              map[string]*tensor.Dense // "q_proj" ... "down_proj", [out, in]
}

type loraModule struct {
	layer  int
	module string // q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
	in     int
	a, b   *engine.Param
	ai, bi int // indices in Params
}

var moduleInput = map[string]string{"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
	"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}

var loraName = regexp.MustCompile(`^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$`)

// New loads the weights of m into an engine. The model may be closed afterwards.
func New(m *model.Model, o Options) (*Engine, error) {
	e := &Engine{cfg: m.Config, opts: o, graphs: map[graphKey]*graph{}}
	var err error
	switch o.DType {
	case "", "float32":
		e.dt = tensor.Float32
	case "float64":
		e.dt = tensor.Float64
	default:
		return nil, fmt.Errorf("cpu: dtype %q, want float32 or float64", o.DType)
	}
	if err := model.CheckQuantization(o.Quantize); err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	if e.mm, err = openGEMM(o); err != nil {
		return nil, err
	}
	if e.opts.MaxBatch <= 0 {
		e.opts.MaxBatch = 8
	}
	if e.opts.MaxTokens <= 0 {
		e.opts.MaxTokens = 8192
	}
	c := m.Config
	if e.embed, err = m.Tensor("model.embed_tokens.weight"); err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	head, err := m.Tensor("lm_head.weight")
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	e.head = e.toDense(head, c.VocabSize, c.HiddenSize)
	if e.finalNorm, err = vec64(m, "model.norm.weight"); err != nil {
		return nil, err
	}
	for i := 0; i < c.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		lw := layerWeights{proj: map[string]*tensor.Dense{}}
		if lw.attnNorm, err = vec64(m, p+"input_layernorm.weight"); err != nil {
			return nil, err
		}
		if lw.mlpNorm, err = vec64(m, p+"post_attention_layernorm.weight"); err != nil {
			return nil, err
		}
		for mod, part := range moduleInput {
			name := p + part + "." + mod + ".weight"
			v, err := e.projWeight(m, name)
			if err != nil {
				return nil, fmt.Errorf("cpu: %w", err)
			}
			s := m.Shape(name)
			lw.proj[mod] = e.toDense(v, s[0], s[1])
		}
		e.layers = append(e.layers, lw)
	}
	if o.LoRA != nil {
		if err := e.bindLoRA(m); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// openGEMM opens the GEMM that o.BLAS (else $RELLA_BLAS) names and logs
// which one it is.
func openGEMM(o Options) (gemm.GEMM, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spec, from := o.BLAS, "options"
	if spec == "" {
		spec, from = os.Getenv(gemm.Env), gemm.Env
		if spec == "" {
			from = "default"
		}
	}
	mm, tried, err := gemm.Open(spec)
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	attrs := []any{"gemm", mm.String(), "blas", cmp.Or(spec, "auto"), "from", from}
	if len(tried) > 0 {
		log.Debug("cpu engine: no optimised BLAS library loaded", "tried", strings.Join(tried, "; "))
		if _, ok := mm.(gemm.Gonum); ok {
			attrs = append(attrs, "hint", "OpenBLAS (Debian: libopenblas0-pthread) makes this engine several times faster")
		}
	}
	log.Info("cpu engine: GEMM", attrs...)
	return mm, nil
}

// projWeight reads a projection weight, quantised and dequantised when
// Options.Quantize is int8.
func (e *Engine) projWeight(m *model.Model, name string) ([]float32, error) {
	if e.opts.Quantize != model.QuantInt8 {
		return m.Tensor(name)
	}
	q, err := m.QuantizedTensor(name)
	if err != nil {
		return nil, err
	}
	return q.Dequantize(), nil
}

func vec64(m *model.Model, name string) ([]float64, error) {
	v, err := m.Tensor(name)
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, nil
}

// toDense wraps (float32) or converts (float64) row-major data as a [r, c] tensor.
func (e *Engine) toDense(v []float32, r, c int) *tensor.Dense {
	if e.dt == tensor.Float32 {
		return tensor.New(tensor.WithShape(r, c), tensor.WithBacking(v))
	}
	w := make([]float64, len(v))
	for i, x := range v {
		w[i] = float64(x)
	}
	return tensor.New(tensor.WithShape(r, c), tensor.WithBacking(w))
}

func (e *Engine) bindLoRA(m *model.Model) error {
	l := e.opts.LoRA
	if l.Dropout < 0 || l.Dropout >= 1 {
		return fmt.Errorf("cpu: lora dropout %g, want [0, 1)", l.Dropout)
	}
	type pair struct{ a, b, ai, bi int }
	found := map[[2]string]*pair{}
	var order [][2]string
	for i, p := range l.Params {
		sm := loraName.FindStringSubmatch(p.Name)
		if sm == nil {
			return fmt.Errorf("cpu: lora parameter %q is not a PEFT layers.N.(self_attn|mlp).X_proj.lora_A|B.weight name", p.Name)
		}
		layer, _ := strconv.Atoi(sm[1])
		if layer >= e.cfg.NumHiddenLayers || moduleInput[sm[3]] != sm[2] {
			return fmt.Errorf("cpu: lora parameter %q names no module of this model", p.Name)
		}
		key := [2]string{sm[1], sm[3]}
		pr := found[key]
		if pr == nil {
			pr = &pair{a: -1, b: -1}
			found[key] = pr
			order = append(order, key)
		}
		if sm[4] == "A" {
			pr.a = i
		} else {
			pr.b = i
		}
		size := 1
		for _, s := range p.Shape {
			size *= s
		}
		if len(p.Shape) != 2 || len(p.Value) != size || len(p.Grad) != size {
			return fmt.Errorf("cpu: lora parameter %q: shape %v with %d values and %d gradients", p.Name, p.Shape, len(p.Value), len(p.Grad))
		}
	}
	for _, key := range order {
		pr := found[key]
		if pr.a < 0 || pr.b < 0 {
			return fmt.Errorf("cpu: lora module layers.%s.%s lacks its lora_A or lora_B", key[0], key[1])
		}
		layer, _ := strconv.Atoi(key[0])
		w := e.layers[layer].proj[key[1]].Shape()
		out, in := w[0], w[1]
		a, b := l.Params[pr.a], l.Params[pr.b]
		r := a.Shape[0]
		if a.Shape[1] != in || b.Shape[0] != out || b.Shape[1] != r {
			return fmt.Errorf("cpu: lora module layers.%s.%s: A %v and B %v do not fit a [%d, %d] weight", key[0], key[1], a.Shape, b.Shape, out, in)
		}
		e.mods = append(e.mods, &loraModule{layer: layer, module: key[1], in: in, a: a, b: b, ai: pr.a, bi: pr.b})
	}
	return nil
}

// Params returns the LoRA parameters in the order given in Options.
func (e *Engine) Params() []*engine.Param {
	if e.opts.LoRA == nil {
		return nil
	}
	return e.opts.LoRA.Params
}

// Close releases the cached graphs.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.graphs = map[graphKey]*graph{}
	e.lru = nil
	return nil
}

// ---- graphs ----

type graphKey struct {
	train bool
	B, T  int
	N     int // labelled rows (training)
}

type graph struct {
	key    graphKey
	g      *G.ExprGraph
	vm     G.VM
	x      *G.Node // [B*T, D] input embeddings
	xv     *tensor.Dense
	out    *G.Node // inference: final-norm hidden [B*T, D]
	loss   *G.Node
	ce     *ceState
	idx    *[]int
	masks  []*[]float64 // per LoRA module (training with dropout)
	aNodes []*G.Node    // per LoRA module
	bNodes []*G.Node
	grads  []*G.Node // [2*len(mods)]: grad A, grad B per module
}

func (e *Engine) getGraph(k graphKey) (*graph, error) {
	if gr, ok := e.graphs[k]; ok {
		i := slices.Index(e.lru, k)
		e.lru = append(slices.Delete(e.lru, i, i+1), k)
		return gr, nil
	}
	gr, err := e.build(k)
	if err != nil {
		return nil, err
	}
	e.graphs[k] = gr
	e.lru = append(e.lru, k)
	n := 0
	for _, q := range e.lru {
		if q.train == k.train {
			n++
		}
	}
	if n > maxGraphs {
		for i, q := range e.lru {
			if q.train == k.train {
				delete(e.graphs, q)
				e.lru = slices.Delete(e.lru, i, i+1)
				break
			}
		}
	}
	return gr, nil
}

func (e *Engine) build(k graphKey) (*graph, error) {
	c := e.cfg
	D, H, KV, hd := c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim
	g := G.NewGraph()
	gr := &graph{key: k, g: g}
	gr.xv = tensor.New(tensor.Of(e.dt), tensor.WithShape(k.B*k.T, D))
	gr.x = G.NewMatrix(g, e.dt, G.WithShape(k.B*k.T, D), G.WithName("x"), G.WithValue(gr.xv))
	cos, sin := ropeTables(k.T, hd, c.RopeTheta)
	dropout := k.train && e.opts.LoRA != nil && e.opts.LoRA.Dropout > 0

	modAt := map[[2]any]int{}
	for i, m := range e.mods {
		modAt[[2]any{m.layer, m.module}] = i
		gr.aNodes = append(gr.aNodes, G.NewMatrix(g, e.dt, G.WithShape(m.a.Shape...), G.WithName(m.a.Name)))
		gr.bNodes = append(gr.bNodes, G.NewMatrix(g, e.dt, G.WithShape(m.b.Shape...), G.WithName(m.b.Name)))
		if dropout {
			mask := make([]float64, k.B*k.T*m.in)
			gr.masks = append(gr.masks, &mask)
		}
	}
	weight := func(name string, w *tensor.Dense) *G.Node {
		return G.NewMatrix(g, e.dt, G.WithShape(w.Shape()...), G.WithName(name), G.WithValue(w))
	}
	proj := func(x *G.Node, layer int, mod string) (*G.Node, error) {
		y, err := linear(e.mm, x, weight(fmt.Sprintf("l%d.%s", layer, mod), e.layers[layer].proj[mod]))
		if err != nil {
			return nil, err
		}
		i, ok := modAt[[2]any{layer, mod}]
		if !ok {
			return y, nil
		}
		in := x
		if dropout {
			if in, err = maskMul(x, gr.masks[i]); err != nil {
				return nil, err
			}
		}
		xa, err := linear(e.mm, in, gr.aNodes[i])
		if err != nil {
			return nil, err
		}
		return loraOut(e.mm, y, xa, gr.bNodes[i], e.opts.LoRA.Scale)
	}

	h := gr.x
	for l := range e.layers {
		lw := &e.layers[l]
		n, err := rmsNorm(h, lw.attnNorm, c.RMSNormEps)
		if err != nil {
			return nil, err
		}
		q, err := proj(n, l, "q_proj")
		if err != nil {
			return nil, err
		}
		kk, err := proj(n, l, "k_proj")
		if err != nil {
			return nil, err
		}
		v, err := proj(n, l, "v_proj")
		if err != nil {
			return nil, err
		}
		if q, err = rope(q, cos, sin, k.T, H, hd, 1/math.Sqrt(float64(hd))); err != nil {
			return nil, err
		}
		if kk, err = rope(kk, cos, sin, k.T, KV, hd, 1); err != nil {
			return nil, err
		}
		a, err := attention(e.mm, q, kk, v, k.T, H, KV, hd)
		if err != nil {
			return nil, err
		}
		o, err := proj(a, l, "o_proj")
		if err != nil {
			return nil, err
		}
		if h, err = add(h, o); err != nil {
			return nil, err
		}
		if n, err = rmsNorm(h, lw.mlpNorm, c.RMSNormEps); err != nil {
			return nil, err
		}
		gate, err := proj(n, l, "gate_proj")
		if err != nil {
			return nil, err
		}
		up, err := proj(n, l, "up_proj")
		if err != nil {
			return nil, err
		}
		act, err := swiglu(gate, up)
		if err != nil {
			return nil, err
		}
		down, err := proj(act, l, "down_proj")
		if err != nil {
			return nil, err
		}
		if h, err = add(h, down); err != nil {
			return nil, err
		}
	}
	final, err := rmsNorm(h, e.finalNorm, c.RMSNormEps)
	if err != nil {
		return nil, err
	}
	outputs := G.Nodes{final}
	if k.train {
		idx := make([]int, k.N)
		gr.idx = &idx
		gr.ce = &ceState{labels: make([]int, k.N), weight: make([]float64, k.N)}
		sel, err := gather(final, gr.idx)
		if err != nil {
			return nil, err
		}
		logits, err := linear(e.mm, sel, weight("lm_head", e.head))
		if err != nil {
			return nil, err
		}
		if gr.loss, err = crossEntropy(logits, gr.ce); err != nil {
			return nil, err
		}
		outputs = G.Nodes{gr.loss}
		if len(e.mods) > 0 {
			wrt := make(G.Nodes, 0, 2*len(e.mods))
			for i := range e.mods {
				wrt = append(wrt, gr.aNodes[i], gr.bNodes[i])
			}
			if gr.grads, err = G.Grad(gr.loss, wrt...); err != nil {
				return nil, fmt.Errorf("cpu: graph: gradients: %w", err)
			}
			outputs = append(outputs, gr.grads...)
		}
	} else {
		gr.out = final
	}
	var inputs G.Nodes
	for _, n := range g.Inputs() {
		inputs = append(inputs, n)
	}
	prog, locs, err := G.CompileFunction(g, inputs, outputs)
	if err != nil {
		return nil, fmt.Errorf("cpu: graph: compile: %w", err)
	}
	gr.vm = G.NewTapeMachine(g, G.WithPrecompiled(prog, locs))
	return gr, nil
}

// bindParams gives the graph the current LoRA values.
func (e *Engine) bindParams(gr *graph) error {
	for i, m := range e.mods {
		for _, pn := range []struct {
			n *G.Node
			p *engine.Param
		}{{gr.aNodes[i], m.a}, {gr.bNodes[i], m.b}} {
			var v *tensor.Dense
			if e.dt == tensor.Float32 {
				v = tensor.New(tensor.WithShape(pn.p.Shape...), tensor.WithBacking(pn.p.Value))
			} else {
				w := make([]float64, len(pn.p.Value))
				for j, x := range pn.p.Value {
					w[j] = float64(x)
				}
				v = tensor.New(tensor.WithShape(pn.p.Shape...), tensor.WithBacking(w))
			}
			if err := G.Let(pn.n, v); err != nil {
				return fmt.Errorf("cpu: bind %s: %w", pn.p.Name, err)
			}
		}
	}
	return nil
}

// fillInput writes the embeddings of seqs (right-padded with zeros to T) into gr.x.
func (e *Engine) fillInput(gr *graph, seqs [][]int) error {
	D, V := e.cfg.HiddenSize, e.cfg.VocabSize
	T := gr.key.T
	switch x := gr.xv.Data().(type) {
	case []float32:
		clear(x)
		for b, s := range seqs {
			for t, id := range s {
				copy(x[(b*T+t)*D:(b*T+t+1)*D], e.embed[id*D:(id+1)*D])
			}
		}
	case []float64:
		clear(x)
		for b, s := range seqs {
			for t, id := range s {
				row := x[(b*T+t)*D : (b*T+t+1)*D]
				for i, v := range e.embed[id*D : (id+1)*D] {
					row[i] = float64(v)
				}
			}
		}
	}
	_ = V
	return nil
}

func (e *Engine) checkTokens(seqs [][]int) error {
	for i, s := range seqs {
		if len(s) == 0 {
			return fmt.Errorf("cpu: sequence %d is empty", i)
		}
		for t, id := range s {
			if id < 0 || id >= e.cfg.VocabSize {
				return fmt.Errorf("cpu: sequence %d position %d: token %d outside the vocabulary [0, %d)", i, t, id, e.cfg.VocabSize)
			}
		}
	}
	return nil
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

// runHidden runs seqs through the inference graph in length-sorted chunks and
// calls use(i, hidden) with sequence i's final-norm hidden states
// ([len(seqs[i]) × D], valid only during the call).
func (e *Engine) runHidden(ctx context.Context, seqs [][]int, use func(i int, h []float64)) error {
	if err := e.checkTokens(seqs); err != nil {
		return err
	}
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(seqs[order[a]]) > len(seqs[order[b]]) })
	D := e.cfg.HiddenSize
	e.mu.Lock()
	defer e.mu.Unlock()
	for lo, hi := 0, 0; lo < len(order); lo = hi {
		if err := ctx.Err(); err != nil {
			return err
		}
		T := padLen(len(seqs[order[lo]]))
		hi = min(lo+e.chunkSize(T), len(order))
		chunk := make([][]int, hi-lo)
		for j := range chunk {
			chunk[j] = seqs[order[lo+j]]
		}
		gr, err := e.getGraph(graphKey{B: len(chunk), T: T})
		if err != nil {
			return err
		}
		if err := e.fillInput(gr, chunk); err != nil {
			return err
		}
		if err := e.bindParams(gr); err != nil {
			return err
		}
		gr.vm.Reset()
		if err := gr.vm.RunAll(); err != nil {
			return fmt.Errorf("cpu: forward: %w", err)
		}
		out, err := dense(gr.out.Value())
		if err != nil {
			return fmt.Errorf("cpu: forward: %w", err)
		}
		buf := make([]float64, 0, T*D)
		for j, s := range chunk {
			buf = buf[:len(s)*D]
			switch d := out.Data().(type) {
			case []float32:
				for i, v := range d[j*T*D : (j*T+len(s))*D] {
					buf[i] = float64(v)
				}
			case []float64:
				copy(buf, d[j*T*D:(j*T+len(s))*D])
			}
			use(order[lo+j], buf)
		}
	}
	return nil
}

// LastLogits returns each sequence's logits at its last token, restricted to rows when non-nil.
func (e *Engine) LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error) {
	V, D := e.cfg.VocabSize, e.cfg.HiddenSize
	for _, r := range rows {
		if r < 0 || r >= V {
			return nil, fmt.Errorf("cpu: logit row %d outside the vocabulary [0, %d)", r, V)
		}
	}
	if rows == nil {
		rows = make([]int, V)
		for i := range rows {
			rows[i] = i
		}
	}
	out := make([][]float32, len(seqs))
	err := e.runHidden(ctx, seqs, func(i int, h []float64) {
		last := h[len(h)-D:]
		res := make([]float32, len(rows))
		parallel(len(rows), func(lo, hi int) {
			for j := lo; j < hi; j++ {
				res[j] = float32(e.headDot(rows[j], last))
			}
		})
		out[i] = res
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// headDot is row r of the LM head times h.
func (e *Engine) headDot(r int, h []float64) float64 {
	D := len(h)
	var s float64
	switch w := e.head.Data().(type) {
	case []float32:
		for i, v := range w[r*D : (r+1)*D] {
			s += float64(v) * h[i]
		}
	case []float64:
		for i, v := range w[r*D : (r+1)*D] {
			s += v * h[i]
		}
	}
	return s
}

// MeanHidden returns each sequence's final-norm hidden states averaged over its tokens.
func (e *Engine) MeanHidden(ctx context.Context, seqs [][]int) ([][]float32, error) {
	D := e.cfg.HiddenSize
	out := make([][]float32, len(seqs))
	err := e.runHidden(ctx, seqs, func(i int, h []float64) {
		n := len(h) / D
		sum := make([]float64, D)
		for t := 0; t < n; t++ {
			for j, v := range h[t*D : (t+1)*D] {
				sum[j] += v
			}
		}
		res := make([]float32, D)
		for j, v := range sum {
			res[j] = float32(v / float64(n))
		}
		out[i] = res
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LossGrad runs forward and backward over batch in training mode and adds
// the gradient of the summed cross-entropy over labelled tokens into each
// Param.Grad. LoRA dropout masks are drawn from dropoutSeed, per module, in
// the order of the examples and their tokens, so they do not depend on how
// the batch is split into graph runs.
func (e *Engine) LossGrad(ctx context.Context, batch []engine.Example, dropoutSeed uint64) (float64, int, error) {
	seqs := make([][]int, len(batch))
	for i, ex := range batch {
		if len(ex.Labels) != len(ex.Tokens) {
			return 0, 0, fmt.Errorf("cpu: example %d has %d tokens and %d labels", i, len(ex.Tokens), len(ex.Labels))
		}
		for t, l := range ex.Labels {
			if l != engine.IgnoreIndex && (l < 0 || l >= e.cfg.VocabSize) {
				return 0, 0, fmt.Errorf("cpu: example %d position %d: label %d outside the vocabulary", i, t, l)
			}
		}
		seqs[i] = ex.Tokens
	}
	if err := e.checkTokens(seqs); err != nil {
		return 0, 0, err
	}
	var masks [][][]float64
	if e.opts.LoRA != nil && e.opts.LoRA.Dropout > 0 {
		ins := make([]int, len(e.mods))
		for i, m := range e.mods {
			ins[i] = m.in
		}
		lens := make([]int, len(batch))
		for i, ex := range batch {
			lens[i] = len(ex.Tokens)
		}
		masks = DropoutMasks(dropoutSeed, e.opts.LoRA.Dropout, ins, lens)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var lossSum float64
	nTok := 0
	for lo, hi := 0, 0; lo < len(batch); lo = hi {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		// Take examples in order while the padded run stays within budget.
		maxLen := 0
		for hi = lo; hi < len(batch) && hi-lo < e.opts.MaxBatch; hi++ {
			l := max(maxLen, len(batch[hi].Tokens))
			if hi > lo && (hi-lo+1)*padLen(l) > e.opts.MaxTokens {
				break
			}
			maxLen = l
		}
		chunk := batch[lo:hi]
		n := 0
		for _, ex := range chunk {
			for _, l := range ex.Labels {
				if l != engine.IgnoreIndex {
					n++
				}
			}
		}
		if n == 0 {
			continue
		}
		k := graphKey{train: true, B: len(chunk), T: padLen(maxLen), N: roundUp(n, rowMultiple)}
		gr, err := e.getGraph(k)
		if err != nil {
			return 0, 0, err
		}
		if err := e.fillInput(gr, seqs[lo:hi]); err != nil {
			return 0, 0, err
		}
		if err := e.bindParams(gr); err != nil {
			return 0, 0, err
		}
		idx := *gr.idx
		r := 0
		for b, ex := range chunk {
			for t, l := range ex.Labels {
				if l == engine.IgnoreIndex {
					continue
				}
				idx[r], gr.ce.labels[r], gr.ce.weight[r] = b*k.T+t, l, 1
				r++
			}
		}
		for ; r < k.N; r++ {
			idx[r], gr.ce.labels[r], gr.ce.weight[r] = 0, 0, 0
		}
		for mi, m := range e.mods {
			if gr.masks == nil {
				break
			}
			mk := *gr.masks[mi]
			for j := range mk {
				mk[j] = 1
			}
			for b := range chunk {
				copy(mk[b*k.T*m.in:], masks[mi][lo+b])
			}
		}
		gr.vm.Reset()
		if err := gr.vm.RunAll(); err != nil {
			return 0, 0, fmt.Errorf("cpu: loss and gradients: %w", err)
		}
		lossSum += gr.ce.loss
		nTok += n
		for mi, m := range e.mods {
			for j, p := range []*engine.Param{m.a, m.b} {
				gv, err := dense(gr.grads[2*mi+j].Value())
				if err != nil {
					return 0, 0, fmt.Errorf("cpu: gradient of %s: %w", p.Name, err)
				}
				switch d := gv.Data().(type) {
				case []float32:
					for i, v := range d {
						p.Grad[i] += v
					}
				case []float64:
					for i, v := range d {
						p.Grad[i] += float32(v)
					}
				}
			}
		}
	}
	return lossSum, nTok, nil
}

// DropoutMasks returns the inverted-dropout masks LossGrad applies to the
// adapter inputs: masks[i][b] is the [lens[b] × ins[i]] row-major mask of
// module i for example b, each value 0 (probability p) or 1/(1−p). Module i
// is the i-th distinct (layer, module) in the order its lora_A or lora_B
// first appears in LoRA.Params. Module i draws from PCG(seed, i+1), example
// by example, token by token, feature by feature (keep when Float64() ≥ p),
// so the masks do not depend on how a batch is split or padded.
func DropoutMasks(seed uint64, p float64, ins, lens []int) [][][]float64 {
	keep := 1 / (1 - p)
	masks := make([][][]float64, len(ins))
	for i, in := range ins {
		rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
		masks[i] = make([][]float64, len(lens))
		for b, n := range lens {
			mk := make([]float64, n*in)
			for j := range mk {
				if rng.Float64() >= p {
					mk[j] = keep
				}
			}
			masks[i][b] = mk
		}
	}
	return masks
}

var (
	_ engine.Engine  = (*Engine)(nil)
	_ engine.Trainer = (*Engine)(nil)
)
