package baseline

import (
	"fmt"
	"strconv"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/rella-project/rella/configs"
)

// net is one model's graph for batches of B rows: it reads the batch's
// slices through the ops' pointers, so a run needs only Fill.
type net struct {
	g      *G.ExprGraph
	vm     G.VM
	bt     *Batch
	logits *G.Node // [B, 1]
	loss   *G.Node // scalar (training graphs)
	params []*Param
	nodes  G.Nodes // the parameters' nodes, in params order
	grads  G.Nodes // d loss / d param (training graphs)
	extra  *simInputs
	byName map[string]*G.Node
	meanW  *tensor.Dense // [B, L] 1/len on valid positions (mean pooling)
	posIDs []int32       // [B*L] position+1 on valid positions, 0 on padding
}

// builder builds one graph of a model over shared Params.
type builder struct {
	n   *net
	p   *Params
	f   *Features
	cfg configs.Baseline
	B   int
}

// param returns the node of parameter name, bound to the shared value.
func (b *builder) param(name string, shape tensor.Shape, how initKind, decay bool) (*G.Node, error) {
	if n, ok := b.n.byName[name]; ok {
		return n, nil
	}
	q, err := b.p.get(name, shape, how, decay)
	if err != nil {
		return nil, err
	}
	var n *G.Node
	if len(shape) == 1 {
		n = G.NewVector(b.n.g, b.p.dt, G.WithShape(shape...), G.WithName(name), G.WithValue(q.Value))
	} else {
		n = G.NewMatrix(b.n.g, b.p.dt, G.WithShape(shape...), G.WithName(name), G.WithValue(q.Value))
	}
	b.n.params = append(b.n.params, q)
	b.n.nodes = append(b.n.nodes, n)
	b.n.byName[name] = n
	return n, nil
}

// constant returns a node bound to a tensor the trainer refills in place.
func (b *builder) constant(name string, shape tensor.Shape) (*G.Node, *tensor.Dense) {
	var v *tensor.Dense
	if b.p.dt == tensor.Float32 {
		v = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]float32, shape.TotalSize())))
	} else {
		v = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]float64, shape.TotalSize())))
	}
	return G.NewMatrix(b.n.g, b.p.dt, G.WithShape(shape...), G.WithName(name), G.WithValue(v)), v
}

// linear is x·W + b with W [in, out] (Glorot) and b [out] (zero).
func (b *builder) linear(x *G.Node, name string, out int, decay bool) (*G.Node, error) {
	in := x.Shape()[1]
	w, err := b.param(name+".w", tensor.Shape{in, out}, initGlorot, decay)
	if err != nil {
		return nil, err
	}
	bias, err := b.param(name+".b", tensor.Shape{out}, initZero, false)
	if err != nil {
		return nil, err
	}
	xw, err := G.Mul(x, w)
	if err != nil {
		return nil, fmt.Errorf("baseline: graph: %s: %w", name, err)
	}
	return addBias(xw, bias)
}

// mlp is ReLU layers of the given sizes, then a linear layer to out.
func (b *builder) mlp(x *G.Node, name string, sizes []int, out int) (*G.Node, error) {
	x, err := b.hidden(x, name, sizes)
	if err != nil {
		return nil, err
	}
	return b.linear(x, name+".out", out, true)
}

// hidden is ReLU layers of the given sizes.
func (b *builder) hidden(x *G.Node, name string, sizes []int) (*G.Node, error) {
	var err error
	for i, h := range sizes {
		if x, err = b.linear(x, name+"."+strconv.Itoa(i), h, true); err != nil {
			return nil, err
		}
		if x, err = relu(x); err != nil {
			return nil, fmt.Errorf("baseline: graph: %s relu: %w", name, err)
		}
	}
	return x, nil
}

// embed looks up rows of the table name (vocab × d) for *ids (n of them).
func (b *builder) embed(name string, vocab int, d int, ids *[]int32, n int) (*G.Node, error) {
	t, err := b.param("emb."+name, tensor.Shape{vocab, d}, initNormal, false)
	if err != nil {
		return nil, err
	}
	return lookup(t, ids, n)
}

// userFields returns each user field's embedding [B, d].
func (b *builder) userFields() ([]*G.Node, error) {
	var out []*G.Node
	for i, v := range b.f.UserVocabs {
		e, err := b.embed("user."+v.Name, v.Size(), b.cfg.EmbeddingSize, &b.n.bt.User[i], b.B)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// itemVector concatenates the item fields' embeddings of ids ([field][n]):
// [n, F_i*d]. The tables are shared by targets and behaviours.
func (b *builder) itemVector(ids [][]int32, n int) (*G.Node, error) {
	var parts []*G.Node
	for i, v := range b.f.ItemVocabs {
		e, err := b.embed("item."+v.Name, v.Size(), b.cfg.EmbeddingSize, &ids[i], n)
		if err != nil {
			return nil, err
		}
		parts = append(parts, e)
	}
	return concat(parts...)
}

// behaviours is the behaviour vectors [n, F_i*d]: the item vector plus an
// embedding of the rating.
func (b *builder) behaviours(ids [][]int32, rates *[]int32, n int) (*G.Node, error) {
	items, err := b.itemVector(ids, n)
	if err != nil {
		return nil, err
	}
	r, err := b.embed("rating", b.f.Ratings.Size(), b.f.ItemFields()*b.cfg.EmbeddingSize, rates, n)
	if err != nil {
		return nil, err
	}
	return add(items, r)
}

// targetAndRecent is what the sequence models start from: each user
// field's embedding [B, d], the target's item vector q [B, F_i*d] and the
// recent behaviours [B*L, F_i*d] (created in that order, so the parameters
// initialise as each model's own code did).
func (b *builder) targetAndRecent() (users []*G.Node, q, recent *G.Node, err error) {
	if users, err = b.userFields(); err != nil {
		return nil, nil, nil, err
	}
	if q, err = b.itemVector(b.n.bt.Item, b.B); err != nil {
		return nil, nil, nil, err
	}
	if recent, err = b.behaviours(b.n.bt.Hist, &b.n.bt.HistRate, b.B*b.f.HistLen); err != nil {
		return nil, nil, nil, err
	}
	return users, q, recent, nil
}

// meanHistory mean-pools the recent behaviours: [B, F_i*d].
func (b *builder) meanHistory(hist *G.Node) (*G.Node, error) {
	w, v := b.constant("mean_weights", tensor.Shape{b.B, b.f.HistLen})
	b.n.meanW = v
	return pool(w, hist)
}

// targetAttention is DIN's attention unit: an MLP over [k, q, k−q, k∘q]
// scores each behaviour k against the target q, a softmax over the valid
// positions weighs them. keys [B*l, D], q [B, D] -> [B, D]. The first
// layer is computed in the equivalent form k·A + q·B + (k∘q)·C + b (A, B
// standing for W_k + W_{k−q} and W_q − W_{k−q}), which halves its cost and
// keeps the [B*l, 4D] concatenation out of the graph.
func (b *builder) targetAttention(name string, keys, q *G.Node, lens *[]int32, l int) (*G.Node, error) {
	D := keys.Shape()[1]
	h := b.cfg.AttentionHidden[0]
	first := name + ".in"
	wk, err := b.param(first+".wk", tensor.Shape{D, h}, initGlorot, true)
	if err != nil {
		return nil, err
	}
	wq, err := b.param(first+".wq", tensor.Shape{D, h}, initGlorot, true)
	if err != nil {
		return nil, err
	}
	wp, err := b.param(first+".wkq", tensor.Shape{D, h}, initGlorot, true)
	if err != nil {
		return nil, err
	}
	bias, err := b.param(first+".b", tensor.Shape{h}, initZero, false)
	if err != nil {
		return nil, err
	}
	qr, err := repeatRows(q, l)
	if err != nil {
		return nil, err
	}
	prod, err := mul(keys, qr)
	if err != nil {
		return nil, err
	}
	ka, err := G.Mul(keys, wk)
	if err != nil {
		return nil, err
	}
	qb, err := G.Mul(q, wq)
	if err != nil {
		return nil, err
	}
	if qb, err = repeatRows(qb, l); err != nil {
		return nil, err
	}
	pc, err := G.Mul(prod, wp)
	if err != nil {
		return nil, err
	}
	x, err := sum(ka, qb, pc)
	if err != nil {
		return nil, err
	}
	if x, err = addBias(x, bias); err != nil {
		return nil, err
	}
	if x, err = relu(x); err != nil {
		return nil, err
	}
	if x, err = b.hidden(x, name, b.cfg.AttentionHidden[1:]); err != nil {
		return nil, err
	}
	// The score layer has no bias: a softmax ignores a shift.
	wo, err := b.param(name+".out.w", tensor.Shape{x.Shape()[1], 1}, initGlorot, true)
	if err != nil {
		return nil, err
	}
	s, err := G.Mul(x, wo)
	if err != nil {
		return nil, err
	}
	w, err := maskedSoftmax(s, lens, l)
	if err != nil {
		return nil, err
	}
	return pool(w, keys)
}

// concat joins matrices along their columns.
func concat(parts ...*G.Node) (*G.Node, error) { return concatCols(parts...) }

// sum adds nodes of one shape.
func sum(parts ...*G.Node) (*G.Node, error) {
	out := parts[0]
	for _, p := range parts[1:] {
		var err error
		if out, err = add(out, p); err != nil {
			return nil, err
		}
	}
	return out, nil
}
