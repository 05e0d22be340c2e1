package retrieval

import (
	"testing"

	"github.com/rella-project/rella/data"
)

func numberedSamples(n int) []data.Sample {
	s := make([]data.Sample, n)
	for i := range s {
		s[i] = data.Sample{User: int32(i / 7), Pos: int32(i), Label: int8(i % 2)}
	}
	return s
}

func TestMixDrawsLikePython(t *testing.T) {
	// python3: random.seed(42); random.sample(range(1000), 6)
	wantLarge := []int{654, 114, 25, 759, 281, 250}
	// python3: random.seed(42); random.sample(range(12), 5) (the pool strategy)
	wantSmall := []int{10, 1, 0, 4, 3}
	for _, tc := range []struct {
		pop  int
		want []int
	}{{1000, wantLarge}, {12, wantSmall}} {
		train := numberedSamples(tc.pop)
		got, sub, err := Mix(train, len(tc.want), 42, TrainMixed)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2*len(tc.want) {
			t.Fatalf("mixed: %d samples, want %d", len(got), 2*len(tc.want))
		}
		for i, w := range tc.want {
			if got[2*i] != train[w] || got[2*i+1] != train[w] {
				t.Fatalf("pair %d: %v %v, want sample %d twice", i, got[2*i], got[2*i+1], w)
			}
			if sub[2*i] || !sub[2*i+1] {
				t.Fatalf("pair %d: useSUBR %v %v, want false true", i, sub[2*i], sub[2*i+1])
			}
		}
		for _, typ := range []string{TrainOriginal, TrainRetrieval} {
			one, sub, err := Mix(train, len(tc.want), 42, typ)
			if err != nil {
				t.Fatal(err)
			}
			if len(one) != len(tc.want) {
				t.Fatalf("%s: %d samples, want %d", typ, len(one), len(tc.want))
			}
			for i, w := range tc.want {
				if one[i] != train[w] || sub[i] != (typ == TrainRetrieval) {
					t.Fatalf("%s %d: %v subr=%v, want sample %d", typ, i, one[i], sub[i], w)
				}
			}
		}
	}
}

func TestMixAllAndErrors(t *testing.T) {
	train := numberedSamples(5)
	got, sub, err := Mix(train, 0, 42, TrainMixed)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 {
		t.Fatalf("n = 0: %d samples, want 10", len(got))
	}
	for i := range train {
		if got[2*i] != train[i] || got[2*i+1] != train[i] || sub[2*i] || !sub[2*i+1] {
			t.Fatalf("n = 0: pair %d out of split order", i)
		}
	}
	if _, _, err := Mix(train, 6, 42, TrainMixed); err == nil {
		t.Error("n above the split size: want error")
	}
	if _, _, err := Mix(train, -1, 42, TrainMixed); err == nil {
		t.Error("negative n: want error")
	}
	if _, _, err := Mix(train, 2, 42, "both"); err == nil {
		t.Error("unknown train type: want error")
	}
}
