package pyrand

import (
	"fmt"
	"math/bits"
)

// NumPy draws like numpy's legacy numpy.random.RandomState.
type NumPy struct {
	mt mt19937
}

// NewNumPy returns a generator seeded as RandomState(seed) seeds one from an
// int: init_genrand(seed), which numpy allows for 0 <= seed < 2**32.
func NewNumPy(seed int64) (*NumPy, error) {
	if seed < 0 || seed > 0xffffffff {
		return nil, fmt.Errorf("pyrand: numpy seed %d must be between 0 and 2**32 - 1", seed)
	}
	n := &NumPy{}
	n.mt.initGenrand(uint32(seed))
	return n, nil
}

// Uint32 returns the generator's next raw 32-bit word.
func (n *NumPy) Uint32() uint32 { return n.mt.uint32() }

// Interval returns a uniform int in [0, max] as numpy's legacy
// random_interval (rk_interval) does: draw words masked to max's bit length
// until one is at most max.
func (n *NumPy) Interval(max uint64) uint64 {
	if max == 0 {
		return 0
	}
	mask := uint64(1)<<bits.Len64(max) - 1
	if max <= 0xffffffff {
		for {
			v := uint64(n.mt.uint32()) & mask
			if v <= max {
				return v
			}
		}
	}
	for {
		hi := uint64(n.mt.uint32())
		lo := uint64(n.mt.uint32())
		v := (hi<<32 | lo) & mask
		if v <= max {
			return v
		}
	}
}

// Permutation returns RandomState.permutation(size): arange(size) shuffled
// from the end, swapping i with Interval(i).
func (n *NumPy) Permutation(size int) []int {
	p := make([]int, size)
	for i := range p {
		p[i] = i
	}
	for i := size - 1; i > 0; i-- {
		j := int(n.Interval(uint64(i)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// Choice returns RandomState.choice(size, k, replace=False) without weights,
// which is permutation(size)[:k]. pandas' DataFrame.sample(n=k,
// random_state=seed) takes its rows in this order.
func (n *NumPy) Choice(size, k int) ([]int, error) {
	if k < 0 || k > size {
		return nil, fmt.Errorf("pyrand: choice of %d from %d without replacement: cannot take a larger sample than population", k, size)
	}
	return n.Permutation(size)[:k], nil
}
