package pyrand

import (
	"math/big"
	"slices"
	"testing"
)

// The Python constants below were printed by CPython 3.11 (python3 -c ...)
// on the development machine; the numpy ones are published values.

func TestPythonShuffle(t *testing.T) {
	p := NewPython(42)
	l := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	p.Shuffle(len(l), func(i, j int) { l[i], l[j] = l[j], l[i] })
	if want := []int{7, 3, 2, 8, 5, 6, 9, 4, 0, 1}; !slices.Equal(l, want) {
		t.Errorf("random.seed(42); shuffle(range(10)): got %v, want %v", l, want)
	}
	p.Seed(42)
	l = make([]int, 1000)
	for i := range l {
		l[i] = i
	}
	p.Shuffle(len(l), func(i, j int) { l[i], l[j] = l[j], l[i] })
	if want := []int{776, 507, 895, 922, 33, 483, 85, 750, 354, 523}; !slices.Equal(l[:10], want) {
		t.Errorf("shuffle(range(1000))[:10]: got %v, want %v", l[:10], want)
	}
	if want := []int{281, 759, 25, 114, 654}; !slices.Equal(l[995:], want) {
		t.Errorf("shuffle(range(1000))[-5:]: got %v, want %v", l[995:], want)
	}
}

func TestPythonSample(t *testing.T) {
	cases := []struct {
		seed int64
		n, k int
		want []int
	}{
		// setsize 21 < 100: set strategy.
		{42, 100, 5, []int{81, 14, 3, 94, 35}},
		// k = 20: setsize 21 + 4**3 = 85; n = 100 uses the set (with
		// collisions), n = 84 the pool.
		{42, 100, 20, []int{81, 14, 3, 94, 35, 31, 28, 17, 13, 86, 69, 11, 75, 54, 4, 27, 29, 64, 77, 71}},
		{42, 84, 20, []int{81, 14, 3, 35, 31, 28, 17, 13, 69, 11, 54, 4, 83, 74, 27, 29, 64, 71, 25, 53}},
		{42, 1000000, 10, []int{670487, 116739, 26225, 777572, 288389, 256787, 234053, 146316, 772246, 107473}},
		{42, 30, 20, []int{20, 3, 0, 23, 8, 7, 24, 4, 28, 17, 2, 18, 13, 1, 27, 16, 21, 29, 25, 9}},
		{42, 21, 3, []int{20, 3, 0}}, // n == setsize: pool
	}
	for _, c := range cases {
		got, err := NewPython(c.seed).Sample(c.n, c.k)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("seed(%d); sample(range(%d), %d): got %v, want %v", c.seed, c.n, c.k, got, c.want)
		}
	}
	// Consecutive samples from one generator, either side of the k = 6
	// boundary (setsize 85).
	p := NewPython(42)
	a, _ := p.Sample(21, 3)
	b, _ := p.Sample(22, 3)
	if !slices.Equal(a, []int{20, 3, 0}) || !slices.Equal(b, []int{8, 7, 4}) {
		t.Errorf("sample(range(21),3), sample(range(22),3): got %v %v, want [20 3 0] [8 7 4]", a, b)
	}
	p = NewPython(1)
	a, _ = p.Sample(85, 6)
	b, _ = p.Sample(86, 6)
	if !slices.Equal(a, []int{17, 72, 8, 32, 15, 63}) || !slices.Equal(b, []int{57, 60, 83, 48, 26, 12}) {
		t.Errorf("seed(1); sample(range(85),6), sample(range(86),6): got %v %v", a, b)
	}
	p = NewPython(42)
	a, _ = p.Sample(200, 150)
	if want := []int{163, 28, 6, 189, 70, 62, 57, 35, 188, 26}; !slices.Equal(a[:10], want) {
		t.Errorf("sample(range(200),150)[:10]: got %v, want %v", a[:10], want)
	}
	if _, err := p.Sample(3, 4); err == nil {
		t.Error("sample of 4 from 3: no error")
	}
}

func TestPythonRandom(t *testing.T) {
	p := NewPython(42)
	for i, want := range []float64{0.6394267984578837, 0.025010755222666936, 0.27502931836911926} {
		if got := p.Random(); got != want {
			t.Errorf("seed(42) random() #%d: got %v, want %v", i, got, want)
		}
	}
	p.Seed(0)
	for i, want := range []float64{0.8444218515250481, 0.7579544029403025} {
		if got := p.Random(); got != want {
			t.Errorf("seed(0) random() #%d: got %v, want %v", i, got, want)
		}
	}
}

func TestPythonSeeds(t *testing.T) {
	words := func(p *Python, n int) []uint64 {
		var r []uint64
		for range n {
			r = append(r, p.GetRandBits(32))
		}
		return r
	}
	if got, want := words(NewPython(0), 2), []uint64{3626764237, 1654615998}; !slices.Equal(got, want) {
		t.Errorf("seed(0): got %v, want %v", got, want)
	}
	if got, want := words(NewPython(1<<40+123), 3), []uint64{4053542138, 1848172766, 16144985}; !slices.Equal(got, want) {
		t.Errorf("seed(2**40+123): got %v, want %v", got, want)
	}
	if got, want := words(NewPython(-7), 2), []uint64{1390851128, 4071050724}; !slices.Equal(got, want) {
		t.Errorf("seed(-7): got %v, want %v", got, want)
	}
	huge := new(big.Int).Lsh(big.NewInt(1), 64)
	huge.Add(huge, big.NewInt(5))
	p := &Python{}
	p.SeedBig(huge)
	if got, want := words(p, 2), []uint64{2192917427, 3085273184}; !slices.Equal(got, want) {
		t.Errorf("seed(2**64+5): got %v, want %v", got, want)
	}
}

func TestPythonGetRandBitsAndRandBelow(t *testing.T) {
	p := NewPython(42)
	ks := []int{1, 7, 31, 32, 33, 48, 63, 64}
	want := []uint64{1, 14, 53710184, 3184935163, 1181241943, 39274139637470, 945351111358374057, 13662908291426823533}
	for i, k := range ks {
		if got := p.GetRandBits(k); got != want[i] {
			t.Errorf("getrandbits(%d): got %d, want %d", k, got, want[i])
		}
	}
	p.Seed(42)
	ns := []int{1, 2, 3, 10, 1000, 1<<31 + 1, 1<<40 + 3}
	wantB := []int{0, 0, 2, 4, 250, 958682846, 191320892468}
	for i, n := range ns {
		if got := p.RandBelow(n); got != wantB[i] {
			t.Errorf("_randbelow(%d): got %d, want %d", n, got, wantB[i])
		}
	}
}

func TestMT19937Reference(t *testing.T) {
	// init_genrand(5489) is the reference generator; C++'s std::mt19937
	// requires its 10000th output to be 4123659995.
	var m mt19937
	m.initGenrand(5489)
	if got := m.uint32(); got != 3499211612 {
		t.Errorf("first output: got %d, want 3499211612", got)
	}
	for i := 2; i < 10000; i++ {
		m.uint32()
	}
	if got := m.uint32(); got != 4123659995 {
		t.Errorf("10000th output: got %d, want 4123659995", got)
	}
}

func TestNumPyPermutation(t *testing.T) {
	cases := []struct {
		seed int64
		want []int
	}{
		{42, []int{8, 1, 5, 0, 7, 2, 9, 4, 3, 6}},
		{0, []int{2, 8, 4, 9, 1, 6, 7, 3, 0, 5}},
	}
	for _, c := range cases {
		n, err := NewNumPy(c.seed)
		if err != nil {
			t.Fatal(err)
		}
		if got := n.Permutation(10); !slices.Equal(got, c.want) {
			t.Errorf("RandomState(%d).permutation(10): got %v, want %v", c.seed, got, c.want)
		}
		n, _ = NewNumPy(c.seed)
		got, err := n.Choice(10, 4)
		if err != nil || !slices.Equal(got, c.want[:4]) {
			t.Errorf("RandomState(%d).choice(10, 4, replace=False): got %v (%v), want %v", c.seed, got, err, c.want[:4])
		}
	}
	if _, err := NewNumPy(1 << 32); err == nil {
		t.Error("seed 2**32: no error")
	}
	if _, err := NewNumPy(-1); err == nil {
		t.Error("seed -1: no error")
	}
}

func TestNumPySeeding(t *testing.T) {
	// np.random.seed(s); np.random.rand() takes 53 bits from two words
	// like random.random(); these are the well-known first values.
	for _, c := range []struct {
		seed int64
		want float64
	}{{0, 0.5488135039273248}, {42, 0.3745401188473625}} {
		n, _ := NewNumPy(c.seed)
		a, b := n.Uint32()>>5, n.Uint32()>>6
		if got := (float64(a)*67108864 + float64(b)) / 9007199254740992; got != c.want {
			t.Errorf("RandomState(%d).random_sample(): got %v, want %v", c.seed, got, c.want)
		}
	}
}
