package pyrand

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
)

// Python draws like CPython's random.Random (checked against Python 3.11).
type Python struct {
	mt mt19937
}

// NewPython returns a generator seeded as random.seed(seed) seeds one: the
// key is abs(seed) cut into 32-bit words, least significant first.
func NewPython(seed int64) *Python {
	p := &Python{}
	p.Seed(seed)
	return p
}

// Seed reseeds p as random.seed(seed) does for an int.
func (p *Python) Seed(seed int64) {
	// abs of math.MinInt64 overflows int64 but not uint64.
	u := uint64(seed)
	if seed < 0 {
		u = -u
	}
	p.SeedBig(new(big.Int).SetUint64(u))
}

// SeedBig reseeds p as random.seed(n) does for an int of any size; the sign
// is ignored.
func (p *Python) SeedBig(n *big.Int) {
	n = new(big.Int).Abs(n)
	words := (n.BitLen() + 31) / 32
	if words == 0 {
		words = 1
	}
	key := make([]uint32, words)
	mask := big.NewInt(0xffffffff)
	w := new(big.Int)
	for i := range key {
		key[i] = uint32(w.And(n, mask).Uint64())
		n.Rsh(n, 32)
	}
	p.mt.initByArray(key)
}

// Uint32 returns the generator's next raw 32-bit word.
func (p *Python) Uint32() uint32 { return p.mt.uint32() }

// Random returns random.random(): a float in [0, 1) with 53 random bits.
func (p *Python) Random() float64 {
	a := p.mt.uint32() >> 5
	b := p.mt.uint32() >> 6
	return (float64(a)*67108864.0 + float64(b)) * (1.0 / 9007199254740992.0)
}

// GetRandBits returns random.getrandbits(k) for 0 <= k <= 64.
func (p *Python) GetRandBits(k int) uint64 {
	if k < 0 || k > 64 {
		panic(fmt.Sprintf("pyrand: GetRandBits(%d): k must be in [0, 64]", k))
	}
	if k == 0 {
		return 0
	}
	if k <= 32 {
		return uint64(p.mt.uint32() >> (32 - k))
	}
	// Words are filled least significant first; the last word drops its
	// low bits.
	lo := uint64(p.mt.uint32())
	hi := p.mt.uint32() >> (64 - k)
	return lo | uint64(hi)<<32
}

// RandBelow returns random._randbelow(n), a uniform int in [0, n), by
// rejection on getrandbits(n.bit_length()). n must be positive.
func (p *Python) RandBelow(n int) int {
	if n <= 0 {
		panic(fmt.Sprintf("pyrand: RandBelow(%d): n must be positive", n))
	}
	k := bits.Len64(uint64(n))
	r := p.GetRandBits(k)
	for r >= uint64(n) {
		r = p.GetRandBits(k)
	}
	return int(r)
}

// Shuffle shuffles n elements as random.shuffle does: for i from n-1 down to
// 1, swap(i, randbelow(i+1)).
func (p *Python) Shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i > 0; i-- {
		j := p.RandBelow(i + 1)
		swap(i, j)
	}
}

// Sample returns random.sample(range(n), k): k distinct ints from [0, n), in
// selection order. Like Python 3.11 it draws from a pool when n is small
// relative to k, and otherwise redraws collisions against a set of the ints
// selected so far; the two give different results, so the choice matters.
func (p *Python) Sample(n, k int) ([]int, error) {
	if k < 0 || k > n {
		return nil, fmt.Errorf("pyrand: sample of %d from %d: sample larger than population or is negative", k, n)
	}
	result := make([]int, k)
	setsize := 21 // size of a small set minus size of an empty list
	if k > 5 {
		setsize += pow4(int(math.Ceil(math.Log(float64(k*3)) / math.Log(4))))
	}
	if n <= setsize {
		pool := make([]int, n)
		for i := range pool {
			pool[i] = i
		}
		for i := 0; i < k; i++ {
			j := p.RandBelow(n - i)
			result[i] = pool[j]
			pool[j] = pool[n-i-1]
		}
		return result, nil
	}
	selected := make(map[int]struct{}, k)
	for i := 0; i < k; i++ {
		j := p.RandBelow(n)
		for {
			if _, dup := selected[j]; !dup {
				break
			}
			j = p.RandBelow(n)
		}
		selected[j] = struct{}{}
		result[i] = j
	}
	return result, nil
}

func pow4(e int) int {
	r := 1
	for ; e > 0; e-- {
		r *= 4
	}
	return r
}
