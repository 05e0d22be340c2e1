package retrieval

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/rella-project/rella/data"
)

// synthDataset builds users with the given history lengths over nItems items
// drawn uniformly, and one sample per event (every position).
func synthDataset(rng *rand.Rand, nItems int, lengths []int) (*data.Dataset, []data.Sample) {
	ds := &data.Dataset{Kind: data.ML1M, Items: make([]data.Item, nItems)}
	var samples []data.Sample
	for u, l := range lengths {
		seq := make([]data.Event, l)
		for p := range seq {
			seq[p] = data.Event{Item: int32(rng.IntN(nItems)), Rating: 4, Time: int64(p)}
			samples = append(samples, data.Sample{User: int32(u), Pos: int32(p), Label: 1})
		}
		ds.Users = append(ds.Users, data.User{})
		ds.Seqs = append(ds.Seqs, seq)
	}
	ds.Train = samples
	return ds, samples
}

// integerVectors returns vectors with entries in {-2..2}: their dot products
// are small integers, exact in any precision, so ties are frequent and the
// reference similarity is independent of Selector's arithmetic.
func integerVectors(rng *rand.Rand, n, d int) [][]float32 {
	v := make([][]float32, n)
	for i := range v {
		v[i] = make([]float32, d)
		for j := range v[i] {
			v[i][j] = float32(rng.IntN(5) - 2)
		}
	}
	return v
}

// bruteForce ranks every history position by (similarity desc, position
// desc) with a full sort, keeps k, and returns them ascending.
func bruteForce(ds *data.Dataset, smp data.Sample, k int, sim func(a, b int32) float64) []int32 {
	seq := ds.Seqs[smp.User]
	target := seq[smp.Pos].Item
	pos := make([]int32, smp.Pos)
	for p := range pos {
		pos[p] = int32(p)
	}
	sort.Slice(pos, func(a, b int) bool {
		sa, sb := sim(target, seq[pos[a]].Item), sim(target, seq[pos[b]].Item)
		if sa != sb {
			return sa > sb
		}
		return pos[a] > pos[b]
	})
	if len(pos) > k {
		pos = pos[:k]
	}
	slices.Sort(pos)
	return pos
}

func exactDot(v [][]float32) func(a, b int32) float64 {
	return func(a, b int32) float64 {
		var s float64
		for j := range v[a] {
			s += float64(v[a][j]) * float64(v[b][j])
		}
		return s
	}
}

func TestSelectMatchesBruteForceWithTies(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	// Lengths include 0, 1 and several shorter than K.
	lengths := []int{0, 1, 2, 5, 7, 8, 9, 40, 120, 3, 75}
	ds, samples := synthDataset(rng, 25, lengths)
	vec := integerVectors(rng, 25, 3) // d = 3 over {-2..2}: many exact ties
	const k = 8
	for _, limit := range []int{-1, 0} {
		sel, err := NewSelector(context.Background(), ds, vec, SelectorOptions{MatrixMaxItems: limit, Workers: 3})
		if err != nil {
			t.Fatal(err)
		}
		if sel.HasMatrix() != (limit == 0) {
			t.Fatalf("limit %d: HasMatrix = %v", limit, sel.HasMatrix())
		}
		all, err := sel.SelectAll(context.Background(), samples, k)
		if err != nil {
			t.Fatal(err)
		}
		ties := 0
		var buf []int32
		for i, smp := range samples {
			want := bruteForce(ds, smp, k, exactDot(vec))
			if got := all.Row(i); !slices.Equal(got, want) {
				t.Fatalf("limit %d sample %d (user %d pos %d): SelectAll %v, brute force %v", limit, i, smp.User, smp.Pos, got, want)
			}
			buf = sel.Select(smp, k, buf)
			if !slices.Equal(buf, want) {
				t.Fatalf("limit %d sample %d: Select %v, brute force %v", limit, i, buf, want)
			}
			for j := all.Counts[i]; j < int32(k); j++ {
				if all.Positions[i*k+int(j)] != -1 {
					t.Fatalf("sample %d: padding slot %d = %d", i, j, all.Positions[i*k+int(j)])
				}
			}
			// Count samples whose cut-off falls inside a group of equal
			// similarities: these exercise the recency rule.
			if int(smp.Pos) > k {
				seq := ds.Seqs[smp.User]
				target := seq[smp.Pos].Item
				sims := make([]float64, smp.Pos)
				for p := range sims {
					sims[p] = exactDot(vec)(target, seq[p].Item)
				}
				slices.Sort(sims)
				slices.Reverse(sims)
				if sims[k-1] == sims[k] {
					ties++
				}
			}
		}
		if ties < 50 {
			t.Fatalf("only %d samples with a tie at the cut-off; the test does not exercise tie-breaking", ties)
		}
	}
}

func TestSelectShortHistoryAndZeroK(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ds, _ := synthDataset(rng, 10, []int{6})
	sel, err := NewSelector(context.Background(), ds, integerVectors(rng, 10, 4), SelectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := sel.Select(data.Sample{User: 0, Pos: 4}, 10, nil)
	if !slices.Equal(got, []int32{0, 1, 2, 3}) {
		t.Fatalf("short history: %v, want all of it", got)
	}
	if got := sel.Select(data.Sample{User: 0, Pos: 4}, 0, []int32{9}); len(got) != 0 {
		t.Fatalf("k = 0: %v, want empty", got)
	}
	if _, err := sel.SelectAll(context.Background(), []data.Sample{{User: 0, Pos: 6}}, 3); err == nil {
		t.Fatal("sample outside its sequence: want error")
	}
	if _, err := sel.SelectAll(context.Background(), nil, 0); err == nil {
		t.Fatal("k = 0: want error")
	}
}

func TestMatrixAndOnTheFlyAgreeOnFloatVectors(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	lengths := make([]int, 60)
	for i := range lengths {
		lengths[i] = 1 + rng.IntN(200)
	}
	const nItems, d = 300, 37
	ds, samples := synthDataset(rng, nItems, lengths)
	vec := make([][]float32, nItems)
	for i := range vec {
		vec[i] = make([]float32, d)
		for j := range vec[i] {
			vec[i][j] = float32(rng.NormFloat64())
		}
		normalize(vec[i])
	}
	// Duplicate items: identical vectors give exactly tied similarities.
	for i := 0; i < 40; i++ {
		vec[nItems-1-i] = slices.Clone(vec[i])
	}
	const k = 15
	a, err := NewSelector(context.Background(), ds, vec, SelectorOptions{MatrixMaxItems: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSelector(context.Background(), ds, vec, SelectorOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ra, err := a.SelectAll(context.Background(), samples, k)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.SelectAll(context.Background(), samples, k)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ra.Positions, rb.Positions) || !slices.Equal(ra.Counts, rb.Counts) {
		t.Fatal("matrix and on-the-fly selections differ")
	}
	// The ranking agrees with a brute force over float64 similarities except
	// where two similarities are closer than float32 resolution.
	ref := exactDot(vec)
	for i, smp := range samples {
		want := bruteForce(ds, smp, k, func(x, y int32) float64 { return float64(b.Similarity(x, y)) })
		if !slices.Equal(ra.Row(i), want) {
			t.Fatalf("sample %d: %v, brute force %v", i, ra.Row(i), want)
		}
	}
	for x := int32(0); x < nItems; x += 7 {
		for y := int32(0); y < nItems; y += 5 {
			if s := b.Similarity(x, y); math.Abs(float64(s)-ref(x, y)) > 1e-6 {
				t.Fatalf("similarity(%d,%d) = %v, float64 dot %v", x, y, s, ref(x, y))
			}
			if a.Similarity(x, y) != b.Similarity(x, y) {
				t.Fatalf("similarity(%d,%d) differs between paths", x, y)
			}
		}
	}
}

func TestNewSelectorRejectsBadVectors(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	ds, _ := synthDataset(rng, 4, []int{3})
	ctx := context.Background()
	if _, err := NewSelector(ctx, ds, integerVectors(rng, 3, 2), SelectorOptions{}); err == nil {
		t.Error("too few vectors: want error")
	}
	v := integerVectors(rng, 4, 2)
	v[2] = []float32{1}
	if _, err := NewSelector(ctx, ds, v, SelectorOptions{}); err == nil {
		t.Error("ragged vectors: want error")
	}
	v = integerVectors(rng, 4, 2)
	v[1][0] = float32(math.Inf(1))
	if _, err := NewSelector(ctx, ds, v, SelectorOptions{}); err == nil {
		t.Error("infinite entry: want error")
	}
	ds.Seqs[0][1].Item = 4
	if _, err := NewSelector(ctx, ds, integerVectors(rng, 4, 2), SelectorOptions{}); err == nil {
		t.Error("event naming a missing item: want error")
	}
}
