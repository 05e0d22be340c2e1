package baseline

import (
	"container/heap"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"
)

// simInputs are SIM's retrieved behaviours for a batch: K per row,
// left-aligned in chronological order.
type simInputs struct {
	K    int
	Ret  [][]int32 // [item field][B*K]
	Rate []int32   // [B*K]
	Len  []int32   // [B]
}

// sim is SIM (Pi et al. 2020): a general search unit retrieves the K
// behaviours of the long history (everything before the recent L) most
// relevant to the target, outside the graph (see retrieve); the exact
// search unit is target attention over them, beside target attention over
// the recent behaviours; an MLP takes the user, the target and both
// interests.
func (b *builder) sim() (*G.Node, error) {
	K := b.cfg.RetrievalSize
	si := &simInputs{K: K, Rate: make([]int32, b.B*K), Len: make([]int32, b.B)}
	for range b.f.ItemVocabs {
		si.Ret = append(si.Ret, make([]int32, b.B*K))
	}
	b.n.extra = si
	us, q, recent, err := b.targetAndRecent()
	if err != nil {
		return nil, err
	}
	ir, err := b.targetAttention("attention.recent", recent, q, &b.n.bt.Len, b.f.HistLen)
	if err != nil {
		return nil, err
	}
	long, err := b.behaviours(si.Ret, &si.Rate, b.B*K)
	if err != nil {
		return nil, err
	}
	il, err := b.targetAttention("attention.long", long, q, &si.Len, K)
	if err != nil {
		return nil, err
	}
	x, err := concat(append(us, q, ir, il)...)
	if err != nil {
		return nil, err
	}
	return b.mlp(x, "deep", b.cfg.Hidden, 1)
}

// hardBonus ranks every hard-search match (same genre / category) above
// every other behaviour; the soft score (cosine similarity, in [-1, 1])
// orders within each group.
const hardBonus = 4

// retrieve fills n.extra for the batch: for each row, the K behaviours of
// its long history with the highest relevance hardBonus·[same search field
// value as the target] + cos(target vector, behaviour's item vector), with
// the current item embeddings (no gradient flows through the search), kept
// in chronological order. Ties go to the more recent behaviour.
func (n *net) retrieve(f *Features, p *Params) {
	si := n.extra
	if si == nil {
		return
	}
	K, bt := si.K, n.bt
	for i := range si.Ret {
		clear(si.Ret[i])
	}
	clear(si.Rate)
	clear(si.Len)
	tables := make([][]float32, len(f.ItemVocabs))
	for i, v := range f.ItemVocabs {
		tables[i] = p.index["emb.item."+v.Name].float32sView()
	}
	d := len(tables[0]) / f.ItemVocabs[0].Size()
	vec := func(item int32, out []float64) {
		for i := range tables {
			id := f.ItemID(item, i)
			for c := 0; c < d; c++ {
				out[i*d+c] = float64(tables[i][int(id)*d+c])
			}
		}
	}
	D := d * len(tables)
	parallel(bt.N, func(lo, hi int) {
		tv, ev := make([]float64, D), make([]float64, D)
		h := &topK{}
		for r := lo; r < hi; r++ {
			s := bt.Samples[r]
			long := f.ds.Seqs[s.User][:bt.longStart[r]]
			if len(long) == 0 {
				continue
			}
			target := f.ds.Target(s).Item
			vec(target, tv)
			tn := norm(tv)
			search := f.ItemID(target, f.Search)
			h.items = h.items[:0]
			for j, e := range long {
				vec(e.Item, ev)
				score := cosine(tv, tn, ev)
				if search != 0 && f.ItemID(e.Item, f.Search) == search {
					score += hardBonus
				}
				c := cand{score: score, pos: j}
				if len(h.items) < K {
					heap.Push(h, c)
				} else if c.better(h.items[0]) {
					h.items[0] = c
					heap.Fix(h, 0)
				}
			}
			pos := make([]int, len(h.items))
			for i, c := range h.items {
				pos[i] = c.pos
			}
			slices.Sort(pos)
			for t, j := range pos {
				e := long[j]
				for i := range si.Ret {
					si.Ret[i][r*K+t] = f.ItemID(e.Item, i)
				}
				si.Rate[r*K+t] = f.RatingID(e.Rating)
			}
			si.Len[r] = int32(len(pos))
		}
	})
}

func norm(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}

func cosine(a []float64, an float64, b []float64) float64 {
	var dot float64
	for i, v := range a {
		dot += v * b[i]
	}
	bn := norm(b)
	if an == 0 || bn == 0 {
		return 0
	}
	return dot / (an * bn)
}

// cand is a behaviour scored by the search.
type cand struct {
	score float64
	pos   int
}

func (c cand) better(o cand) bool { return c.score > o.score || (c.score == o.score && c.pos > o.pos) }

// topK is a min-heap of the K best candidates (the worst on top).
type topK struct{ items []cand }

func (h *topK) Len() int           { return len(h.items) }
func (h *topK) Less(i, j int) bool { return h.items[j].better(h.items[i]) }
func (h *topK) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *topK) Push(x any)         { h.items = append(h.items, x.(cand)) }
func (h *topK) Pop() any {
	c := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return c
}
