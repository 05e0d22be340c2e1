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
