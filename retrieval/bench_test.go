package retrieval

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rella-project/rella/data"
)

// ML-1M's shape: users, items, ratings, and the samples that have at least
// five earlier ratings (970,009 = 1,000,209 - 5 x 6,040).
const (
	ml1mUsers   = 6040
	ml1mItems   = 3706
	ml1mRatings = 1000209
	ml1mMinLen  = 20
	ml1mMaxLen  = 2314
	ml1mSkip    = 5
)

// ml1mLengths draws skewed (log-normal) history lengths in [20, 2314] that
// sum to exactly 1,000,209, like ML-1M's (median about 96, mean 165.6).
func ml1mLengths(rng *rand.Rand) []int {
	l := make([]int, ml1mUsers)
	sum := 0
	for i := range l {
		v := ml1mMinLen + int(math.Exp(4.3+1.1*rng.NormFloat64()))
		l[i] = min(v, ml1mMaxLen)
		sum += l[i]
	}
	for sum != ml1mRatings {
		i := rng.IntN(ml1mUsers)
		switch {
		case sum < ml1mRatings && l[i] < ml1mMaxLen:
			l[i]++
			sum++
		case sum > ml1mRatings && l[i] > ml1mMinLen:
			l[i]--
			sum--
		}
	}
	return l
}

func randomUnitVectors(rng *rand.Rand, n, d int) [][]float32 {
	v := make([][]float32, n)
	flat := make([]float32, n*d)
	for i := range v {
		v[i] = flat[i*d : (i+1)*d]
		for j := range v[i] {
			v[i][j] = float32(rng.NormFloat64())
		}
		normalize(v[i])
	}
	return v
}

func TestML1MShape(t *testing.T) {
	l := ml1mLengths(rand.New(rand.NewPCG(1, 2)))
	sum, long := 0, 0
	for _, v := range l {
		sum += v
		if v < ml1mMinLen || v > ml1mMaxLen {
			t.Fatalf("length %d outside [%d, %d]", v, ml1mMinLen, ml1mMaxLen)
		}
		long = max(long, v)
	}
	if sum != ml1mRatings || sum-ml1mSkip*ml1mUsers != 970009 {
		t.Fatalf("ratings %d, want %d", sum, ml1mRatings)
	}
	if long < 1000 {
		t.Fatalf("longest history %d: not skewed like ML-1M", long)
	}
}

// BenchmarkSelectAllML1M selects K = 30 SUBR histories for 970,009 samples of
// a synthetic ML-1M-shaped dataset (d = 512 random unit vectors), building the
// 3,706^2 similarity matrix first. Run it on two cores:
//
//	go test ./retrieval/ -run '^$' -bench SelectAllML1M -benchtime 1x -cpu 2
func BenchmarkSelectAllML1M(b *testing.B) {
	rng := rand.New(rand.NewPCG(42, 1))
	lengths := ml1mLengths(rng)
	ds := &data.Dataset{Kind: data.ML1M, Items: make([]data.Item, ml1mItems)}
	var samples []data.Sample
	for u, l := range lengths {
		seq := make([]data.Event, l)
		for p := range seq {
			seq[p] = data.Event{Item: int32(rng.IntN(ml1mItems)), Rating: 4, Time: int64(p)}
			if p >= ml1mSkip {
				samples = append(samples, data.Sample{User: int32(u), Pos: int32(p), Label: 1})
			}
		}
		ds.Users = append(ds.Users, data.User{})
		ds.Seqs = append(ds.Seqs, seq)
	}
	vec := randomUnitVectors(rng, ml1mItems, 512)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		sel, err := NewSelector(ctx, ds, vec, SelectorOptions{})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		out, err := sel.SelectAll(ctx, samples, 30)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if out.Len() != 970009 {
			b.Fatalf("%d samples, want 970009", out.Len())
		}
		b.ReportMetric(t1.Sub(t0).Seconds(), "matrix-s")
		b.ReportMetric(t2.Sub(t1).Seconds(), "select-s")
	}
}

// BenchmarkSelectAllOnTheFlyML25M selects K = 30 SUBR histories for 160,000
// samples (the paper's 90,000 train + 70,000 test) drawn uniformly from the
// ratings of 20,000 users with ML-25M-like skewed history lengths (log-normal,
// mean about 150, up to 32,000), over 59,047 items with d = 512: too many
// items for the similarity matrix, so similarities are computed per sample.
//
//	go test ./retrieval/ -run '^$' -bench OnTheFly -benchtime 1x -cpu 2
func BenchmarkSelectAllOnTheFlyML25M(b *testing.B) {
	const users, items, nSamples = 20000, 59047, 160000
	rng := rand.New(rand.NewPCG(25, 1))
	ds := &data.Dataset{Kind: data.ML25M, Items: make([]data.Item, items)}
	type ref struct{ u, p int32 }
	var all []ref
	for u := 0; u < users; u++ {
		l := min(20+int(math.Exp(4.0+1.25*rng.NormFloat64())), 32000)
		seq := make([]data.Event, l)
		for p := range seq {
			seq[p] = data.Event{Item: int32(rng.IntN(items))}
			if p >= 5 {
				all = append(all, ref{int32(u), int32(p)})
			}
		}
		ds.Users = append(ds.Users, data.User{})
		ds.Seqs = append(ds.Seqs, seq)
	}
	samples := make([]data.Sample, nSamples)
	hist := 0
	for i := range samples {
		r := all[rng.IntN(len(all))]
		samples[i] = data.Sample{User: r.u, Pos: r.p}
		hist += int(r.p)
	}
	b.Logf("%d ratings, mean history of a sample %.0f", len(all)+5*users, float64(hist)/nSamples)
	vec := randomUnitVectors(rng, items, 512)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		sel, err := NewSelector(ctx, ds, vec, SelectorOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if sel.HasMatrix() {
			b.Fatal("59,047 items must not get a matrix")
		}
		if _, err := sel.SelectAll(ctx, samples, 30); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPCAML1M fits PCA to d = 512 on 3,706 random 4,096-dimensional
// embeddings (ML-1M's items under Vicuna-7B): the randomized solver.
//
//	go test ./retrieval/ -run '^$' -bench PCAML1M -benchtime 1x -cpu 2
func BenchmarkPCAML1M(b *testing.B) {
	rng := rand.New(rand.NewPCG(4096, 1))
	x := randomRows(rng, ml1mItems, 4096)
	b.ResetTimer()
	for b.Loop() {
		y, err := PCA(x, 512)
		if err != nil {
			b.Fatal(err)
		}
		if len(y[0]) != 512 {
			b.Fatalf("dim %d", len(y[0]))
		}
	}
}
