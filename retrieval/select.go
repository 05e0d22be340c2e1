package retrieval

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"gonum.org/v1/gonum/blas/gonum"

	"github.com/rella-project/rella/data"
)

// DefaultMatrixMaxItems is the largest catalogue for which a Selector
// precomputes the item x item similarity matrix (16,384^2 float32 = 1 GiB).
const DefaultMatrixMaxItems = 16384

// SelectorOptions tune a Selector; the zero value means the defaults.
type SelectorOptions struct {
	// MatrixMaxItems: precompute all item x item similarities when the
	// catalogue has at most this many items (0 = DefaultMatrixMaxItems,
	// negative = never); otherwise similarities are computed per sample.
	MatrixMaxItems int
	// Workers is the number of goroutines (0 = GOMAXPROCS).
	Workers int
	// Logger receives progress messages (nil = none).
	Logger *slog.Logger
}

// Selector ranks a sample's history by SUBR: the history items most similar
// to the target item, where the similarity of two items is the dot product
// of their vectors (cosine when the vectors are unit length, as PCA
// returns them). It is safe for concurrent use.
type Selector struct {
	ds      *data.Dataset
	n, d    int
	stride  int       // d rounded up to a multiple of 4; padding is zero
	vec     []float32 // n x stride, row-major, 16-byte aligned rows
	sim     []float32 // n x n, or nil when computed on the fly
	workers int
	log     *slog.Logger
	pool    sync.Pool // *scratch for Select
}

// NewSelector checks that vectors has one finite row per item of ds, all of
// the same length, and that every event of ds names an existing item; it
// then precomputes the similarity matrix when the catalogue is small enough
// (see SelectorOptions). The vectors are copied.
func NewSelector(ctx context.Context, ds *data.Dataset, vectors [][]float32, opts SelectorOptions) (*Selector, error) {
	if ds == nil {
		return nil, fmt.Errorf("retrieval: selector: nil dataset")
	}
	n := len(ds.Items)
	if len(vectors) != n {
		return nil, fmt.Errorf("retrieval: selector: %d item vectors for %d items", len(vectors), n)
	}
	if n == 0 {
		return nil, fmt.Errorf("retrieval: selector: dataset has no items")
	}
	d := len(vectors[0])
	if d == 0 {
		return nil, fmt.Errorf("retrieval: selector: item vectors are empty")
	}
	stride := (d + 3) &^ 3
	vec := alignedFloats(n * stride)
	for i, v := range vectors {
		if len(v) != d {
			return nil, fmt.Errorf("retrieval: selector: item %d vector has length %d, want %d", i, len(v), d)
		}
		for j, a := range v {
			if math.IsNaN(float64(a)) || math.IsInf(float64(a), 0) {
				return nil, fmt.Errorf("retrieval: selector: item %d vector entry %d is not finite (%v)", i, j, a)
			}
		}
		copy(vec[i*stride:], v)
	}
	for u, seq := range ds.Seqs {
		for p, e := range seq {
			if e.Item < 0 || int(e.Item) >= n {
				return nil, fmt.Errorf("retrieval: selector: user %d event %d names item %d of %d", u, p, e.Item, n)
			}
		}
	}
	s := &Selector{ds: ds, n: n, d: d, stride: stride, vec: vec, workers: opts.Workers, log: opts.Logger}
	if s.workers <= 0 {
		s.workers = runtime.GOMAXPROCS(0)
	}
	limit := opts.MatrixMaxItems
	if limit == 0 {
		limit = DefaultMatrixMaxItems
	}
	if n <= limit {
		if err := s.buildMatrix(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Items is the number of items; Dim the vectors' length.
func (s *Selector) Items() int { return s.n }

// Dim is the length of the item vectors.
func (s *Selector) Dim() int { return s.d }

// HasMatrix reports whether similarities are precomputed.
func (s *Selector) HasMatrix() bool { return s.sim != nil }

// Similarity is the similarity of items a and b, exactly as ranking uses it.
func (s *Selector) Similarity(a, b int32) float32 {
	if s.sim != nil {
		return s.sim[int(a)*s.n+int(b)]
	}
	return s.dot(a, b)
}

// row returns item i's padded vector.
func (s *Selector) row(i int32) []float32 {
	return s.vec[int(i)*s.stride : int(i)*s.stride+s.stride]
}

// dot is the one place similarities are computed, so that the matrix and the
// on-the-fly paths agree bit for bit.
func (s *Selector) dot(a, b int32) float32 {
	return dot(s.row(a), s.row(b))
}

// dot is the float32 dot product of two padded rows by gonum's Sdot (SIMD
// on amd64). gonum's amd64 Sdot
// peels leading elements until y is 16-byte aligned, which would make the
// summation order (and the last bits) depend on the argument order; rows are
// 16-byte aligned with a length that is a multiple of 4, so it never peels,
// and the sum is the same for (x, y) and (y, x) and on every call.
func dot(x, y []float32) float32 {
	return gonum.Implementation{}.Sdot(len(x), x, 1, y, 1)
}

// alignedFloats returns n zeroed float32s starting on a 16-byte boundary.
func alignedFloats(n int) []float32 {
	buf := make([]float32, n+4)
	off := 0
	for uintptr(unsafe.Pointer(&buf[off]))%16 != 0 {
		off++
	}
	return buf[off : off+n : off+n]
}

// matrixBlock is the tile edge used when filling the similarity matrix.
const matrixBlock = 32

func (s *Selector) buildMatrix(ctx context.Context) error {
	start := time.Now()
	n := s.n
	sim := make([]float32, n*n)
	blocks := (n + matrixBlock - 1) / matrixBlock
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < s.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				bi := int(next.Add(1) - 1)
				if bi >= blocks || ctx.Err() != nil {
					return
				}
				// Row block bi against column blocks bj >= bi; each pair
				// (i, j) with i <= j is computed once and mirrored, by the
				// one goroutine that owns row block bi.
				i0, i1 := bi*matrixBlock, min((bi+1)*matrixBlock, n)
				for bj := bi; bj < blocks; bj++ {
					j0, j1 := bj*matrixBlock, min((bj+1)*matrixBlock, n)
					for i := i0; i < i1; i++ {
						for j := max(i, j0); j < j1; j++ {
							v := s.dot(int32(i), int32(j))
							sim[i*n+j] = v
							sim[j*n+i] = v
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("retrieval: similarity matrix: %w", err)
	}
	s.sim = sim
	if s.log != nil {
		took := time.Since(start)
		s.log.Log(ctx, slowLevel(took), "retrieval: item similarity matrix", "items", n, "dim", s.d, "elapsed", took.Round(time.Millisecond))
	}
	return nil
}

// cand is a history position and its similarity to the target.
type cand struct {
	sim float32
	pos int32
}

// worse orders candidates: lower similarity is worse; on equal similarity the
// older (smaller) position is worse, so ties go to recency.
func worse(a, b cand) bool {
	return a.sim < b.sim || (a.sim == b.sim && a.pos < b.pos)
}

// scratch is one goroutine's working memory.
type scratch struct {
	scores []float32
	heap   []cand
}

// scores fills sc.scores[:pos] with the similarity of each history item to
// the target of the sample.
func (s *Selector) scores(smp data.Sample, sc *scratch) []float32 {
	seq := s.ds.Seqs[smp.User]
	pos := int(smp.Pos)
	target := seq[pos].Item
	if cap(sc.scores) < pos {
		sc.scores = make([]float32, pos, pos+pos/2)
	}
	out := sc.scores[:pos]
	if s.sim != nil {
		row := s.sim[int(target)*s.n : int(target)*s.n+s.n]
		for p, e := range seq[:pos] {
			out[p] = row[e.Item]
		}
		return out
	}
	t := s.row(target)
	for p, e := range seq[:pos] {
		out[p] = dot(t, s.row(e.Item))
	}
	return out
}

// topK appends to dst the positions of the k best scores (see worse), in
// ascending order.
func topK(scores []float32, k int, sc *scratch, dst []int32) []int32 {
	if len(scores) <= k {
		for p := range scores {
			dst = append(dst, int32(p))
		}
		return dst
	}
	h := sc.heap[:0]
	// Walk from the most recent position back: a newcomer is older than
	// everything in the heap, so it enters only with a strictly higher
	// similarity than the worst kept one.
	for p := len(scores) - 1; p >= 0; p-- {
		c := cand{scores[p], int32(p)}
		if len(h) < k {
			h = append(h, c)
			siftUp(h, len(h)-1)
			continue
		}
		if c.sim > h[0].sim {
			h[0] = c
			siftDown(h, 0)
		}
	}
	sc.heap = h
	start := len(dst)
	for _, c := range h {
		dst = append(dst, c.pos)
	}
	slices.Sort(dst[start:])
	return dst
}

func siftUp(h []cand, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !worse(h[i], h[p]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func siftDown(h []cand, i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && worse(h[r], h[l]) {
			m = r
		}
		if !worse(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// Select returns the history positions (indices into
// ds.Seqs[smp.User][:smp.Pos]) of the k items most similar to the sample's
// target, ties going to the more recent position, in ascending
// (chronological) order; a history of at most k items is returned whole.
// The result reuses dst's storage (it replaces dst's contents). It
// implements prompt's Selector.
func (s *Selector) Select(smp data.Sample, k int, dst []int32) []int32 {
	dst = dst[:0]
	if k <= 0 {
		return dst
	}
	sc, _ := s.pool.Get().(*scratch)
	if sc == nil {
		sc = new(scratch)
	}
	dst = topK(s.scores(smp, sc), k, sc, dst)
	s.pool.Put(sc)
	return dst
}

// Selection holds SUBR histories of a list of samples: row i, of length
// Counts[i], is Positions[i*K : i*K+Counts[i]].
type Selection struct {
	K         int
	Positions []int32 // len(Counts) x K; unused slots hold -1
	Counts    []int32
}

// Len is the number of samples.
func (sel *Selection) Len() int { return len(sel.Counts) }

// Row returns the chosen history positions of sample i, ascending.
func (sel *Selection) Row(i int) []int32 {
	return sel.Positions[i*sel.K : i*sel.K+int(sel.Counts[i])]
}

// selectChunk is the number of samples a worker claims at a time.
const selectChunk = 512

// SelectAll runs Select for every sample in parallel. Memory beyond the
// result is one history-length buffer per worker.
func (s *Selector) SelectAll(ctx context.Context, samples []data.Sample, k int) (*Selection, error) {
	if k <= 0 {
		return nil, fmt.Errorf("retrieval: select: k must be positive, got %d", k)
	}
	for i, smp := range samples {
		if smp.User < 0 || int(smp.User) >= len(s.ds.Seqs) || smp.Pos < 0 || int(smp.Pos) >= len(s.ds.Seqs[smp.User]) {
			return nil, fmt.Errorf("retrieval: select: sample %d (user %d, pos %d) is outside the dataset", i, smp.User, smp.Pos)
		}
	}
	start := time.Now()
	sel := &Selection{K: k, Positions: make([]int32, len(samples)*k), Counts: make([]int32, len(samples))}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < s.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := scratch{heap: make([]cand, 0, k)}
			for {
				lo := int(next.Add(selectChunk) - selectChunk)
				if lo >= len(samples) || ctx.Err() != nil {
					return
				}
				for i := lo; i < min(lo+selectChunk, len(samples)); i++ {
					row := sel.Positions[i*k : i*k+k]
					got := topK(s.scores(samples[i], &sc), k, &sc, row[:0])
					for j := len(got); j < k; j++ {
						row[j] = -1
					}
					sel.Counts[i] = int32(len(got))
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("retrieval: select: %w", err)
	}
	if s.log != nil {
		took := time.Since(start)
		s.log.Log(ctx, slowLevel(took), "retrieval: selected histories", "samples", len(samples), "k", k, "matrix", s.sim != nil, "elapsed", took.Round(time.Millisecond))
	}
	return sel, nil
}

// Cached serves Select from a precomputed Selection for the samples it was
// computed for (when k equals its K) and falls back to a Selector otherwise.
// It implements prompt's Selector and is safe for concurrent use.
type Cached struct {
	sel   *Selection
	index map[[2]int32]int
	fall  *Selector
}

// NewCached indexes sel, computed for samples, by (user, position);
// fallback serves every other request.
func NewCached(sel *Selection, samples []data.Sample, fallback *Selector) (*Cached, error) {
	if fallback == nil {
		return nil, fmt.Errorf("retrieval: cached selection needs a fallback selector")
	}
	if sel.Len() != len(samples) {
		return nil, fmt.Errorf("retrieval: cached selection has %d rows for %d samples", sel.Len(), len(samples))
	}
	idx := make(map[[2]int32]int, len(samples))
	for i, s := range samples {
		idx[[2]int32{s.User, s.Pos}] = i
	}
	return &Cached{sel: sel, index: idx, fall: fallback}, nil
}

// Select implements prompt's Selector (see Selector.Select).
func (c *Cached) Select(smp data.Sample, k int, dst []int32) []int32 {
	if i, ok := c.index[[2]int32{smp.User, smp.Pos}]; ok && k == c.sel.K {
		return append(dst[:0], c.sel.Row(i)...)
	}
	return c.fall.Select(smp, k, dst)
}

// slowLevel is the level of a timing line: Info when the work took a second
// or more, else Debug (every stage that retrieves repeats the work, and
// on small item sets the lines would only repeat themselves).
func slowLevel(took time.Duration) slog.Level {
	if took >= time.Second {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}
