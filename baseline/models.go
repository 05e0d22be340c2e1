package baseline

import (
	"fmt"
	"strconv"

	G "gorgonia.org/gorgonia"

	"github.com/rella-project/rella/configs"
)

// newNet builds model's graph for batches of bsz rows over the shared
// parameters p; with train it adds the loss and the gradients.
func newNet(model string, f *Features, cfg configs.Baseline, p *Params, bsz int, train bool) (*net, error) {
	n := &net{g: G.NewGraph(), bt: f.NewBatch(bsz), byName: map[string]*G.Node{}}
	b := &builder{n: n, p: p, f: f, cfg: cfg, B: bsz}
	var err error
	switch model {
	case "deepfm":
		n.logits, err = b.deepFM()
	case "dcnv2":
		n.logits, err = b.dcnV2()
	case "din":
		n.logits, err = b.din()
	case "sim":
		n.logits, err = b.sim()
	case "sasrec":
		n.logits, err = b.sasRec()
	default:
		err = fmt.Errorf("baseline: unknown model %q (want one of %v)", model, configs.BaselineModels)
	}
	if err != nil {
		return nil, fmt.Errorf("baseline: %s: %w", model, err)
	}
	outputs := G.Nodes{n.logits}
	if train {
		if n.loss, err = bceLoss(n.logits, &n.bt.Label, &n.bt.Weight); err != nil {
			return nil, err
		}
		if n.grads, err = G.Grad(n.loss, n.nodes...); err != nil {
			return nil, fmt.Errorf("baseline: %s: gradients: %w", model, err)
		}
		outputs = append(G.Nodes{n.loss, n.logits}, n.grads...)
	}
	var inputs G.Nodes
	for _, in := range n.g.Inputs() {
		inputs = append(inputs, in)
	}
	prog, locs, err := G.CompileFunction(n.g, inputs, outputs)
	if err != nil {
		return nil, fmt.Errorf("baseline: %s: compile: %w", model, err)
	}
	n.vm = G.NewTapeMachine(n.g, G.WithPrecompiled(prog, locs))
	return n, nil
}

// fieldsInput is the concatenated field embeddings of the
// feature-interaction models: the user's fields, the target's item fields
// and the mean-pooled behaviours (F_i more fields of d), [B, F*d], and F.
func (b *builder) fieldsInput() (*G.Node, int, error) {
	us, err := b.userFields()
	if err != nil {
		return nil, 0, err
	}
	item, err := b.itemVector(b.n.bt.Item, b.B)
	if err != nil {
		return nil, 0, err
	}
	hist, err := b.behaviours(b.n.bt.Hist, &b.n.bt.HistRate, b.B*b.f.HistLen)
	if err != nil {
		return nil, 0, err
	}
	mean, err := b.meanHistory(hist)
	if err != nil {
		return nil, 0, err
	}
	x, err := concat(append(us, item, mean)...)
	return x, len(us) + 2*b.f.ItemFields(), err
}

// deepFM: a first-order term (one weight per user and item field value), the
// FM pairwise term over all fields, and an MLP over them, summed.
func (b *builder) deepFM() (*G.Node, error) {
	x, nf, err := b.fieldsInput()
	if err != nil {
		return nil, err
	}
	var terms []*G.Node
	for i, v := range b.f.UserVocabs {
		w, err := b.embed("first.user."+v.Name, v.Size(), 1, &b.n.bt.User[i], b.B)
		if err != nil {
			return nil, err
		}
		terms = append(terms, w)
	}
	for i, v := range b.f.ItemVocabs {
		w, err := b.embed("first.item."+v.Name, v.Size(), 1, &b.n.bt.Item[i], b.B)
		if err != nil {
			return nil, err
		}
		terms = append(terms, w)
	}
	pair, err := fm(x, nf)
	if err != nil {
		return nil, err
	}
	deep, err := b.mlp(x, "deep", b.cfg.Hidden, 1)
	if err != nil {
		return nil, err
	}
	return sum(append(terms, pair, deep)...)
}

// dcnV2: a cross network x_{l+1} = x0 ∘ (x_l W_l + b_l) + x_l beside an MLP
// (the parallel structure), their outputs concatenated into a linear layer.
func (b *builder) dcnV2() (*G.Node, error) {
	x0, _, err := b.fieldsInput()
	if err != nil {
		return nil, err
	}
	d := x0.Shape()[1]
	x := x0
	for l := 0; l < b.cfg.CrossLayers; l++ {
		xw, err := b.linear(x, "cross."+strconv.Itoa(l), d, true)
		if err != nil {
			return nil, err
		}
		c, err := mul(x0, xw)
		if err != nil {
			return nil, err
		}
		if x, err = add(c, x); err != nil {
			return nil, err
		}
	}
	deep := x0
	for i, h := range b.cfg.Hidden {
		if deep, err = b.linear(deep, "deep."+strconv.Itoa(i), h, true); err != nil {
			return nil, err
		}
		if deep, err = relu(deep); err != nil {
			return nil, err
		}
	}
	both, err := concat(x, deep)
	if err != nil {
		return nil, err
	}
	return b.linear(both, "out", 1, true)
}

// din: target attention over the recent behaviours, then an MLP over the
// user's fields, the target and the attended interest.
func (b *builder) din() (*G.Node, error) {
	us, q, hist, err := b.targetAndRecent()
	if err != nil {
		return nil, err
	}
	interest, err := b.targetAttention("attention", hist, q, &b.n.bt.Len, b.f.HistLen)
	if err != nil {
		return nil, err
	}
	x, err := concat(append(us, q, interest)...)
	if err != nil {
		return nil, err
	}
	return b.mlp(x, "deep", b.cfg.Hidden, 1)
}

// sasRec: causal self-attention blocks over the recent behaviours (with
// learned position embeddings), then attention with the target item as the
// query, then an MLP over the user, the target, the interest and their
// product.
func (b *builder) sasRec() (*G.Node, error) {
	us, q, h, err := b.targetAndRecent()
	if err != nil {
		return nil, err
	}
	L := b.f.HistLen
	D := h.Shape()[1]
	b.n.posIDs = make([]int32, b.B*L)
	pos, err := b.embed("position", L+1, D, &b.n.posIDs, b.B*L)
	if err != nil {
		return nil, err
	}
	if h, err = add(h, pos); err != nil {
		return nil, err
	}
	for k := 0; k < b.cfg.Blocks; k++ {
		name := "block." + strconv.Itoa(k)
		var qkv [3]*G.Node
		for i, s := range []string{"q", "k", "v"} {
			if qkv[i], err = b.linear(h, name+"."+s, D, true); err != nil {
				return nil, err
			}
		}
		a, err := selfAttention(qkv[0], qkv[1], qkv[2], &b.n.bt.Len, L)
		if err != nil {
			return nil, err
		}
		if h, err = add(h, a); err != nil {
			return nil, err
		}
		ff, err := b.linear(h, name+".ffn1", D, true)
		if err != nil {
			return nil, err
		}
		if ff, err = relu(ff); err != nil {
			return nil, err
		}
		if ff, err = b.linear(ff, name+".ffn2", D, true); err != nil {
			return nil, err
		}
		if h, err = add(h, ff); err != nil {
			return nil, err
		}
	}
	qr, err := repeatRows(q, L)
	if err != nil {
		return nil, err
	}
	s, err := rowDot(h, qr)
	if err != nil {
		return nil, err
	}
	w, err := maskedSoftmax(s, &b.n.bt.Len, L)
	if err != nil {
		return nil, err
	}
	interest, err := pool(w, h)
	if err != nil {
		return nil, err
	}
	match, err := mul(q, interest)
	if err != nil {
		return nil, err
	}
	x, err := concat(append(us, q, interest, match)...)
	if err != nil {
		return nil, err
	}
	return b.mlp(x, "deep", b.cfg.Hidden, 1)
}

// fillPositions sets the position ids of the batch's valid behaviours.
func (n *net) fillPositions() {
	if n.posIDs == nil {
		return
	}
	L := n.bt.L
	for r := range n.bt.B {
		for t := range L {
			id := int32(0)
			if t < int(n.bt.Len[r]) {
				id = int32(t + 1)
			}
			n.posIDs[r*L+t] = id
		}
	}
}

// fillMean sets the mean-pooling weights of the batch.
func (n *net) fillMean() {
	if n.meanW == nil {
		return
	}
	L := n.bt.L
	set := func(i int, v float64) {
		switch d := n.meanW.Data().(type) {
		case []float32:
			d[i] = float32(v)
		case []float64:
			d[i] = v
		}
	}
	for r := range n.bt.B {
		for t := range L {
			v := 0.0
			if l := int(n.bt.Len[r]); t < l {
				v = 1 / float64(l)
			}
			set(r*L+t, v)
		}
	}
}
