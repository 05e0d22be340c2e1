// Package pyrand reproduces the random draws of CPython's random module and
// of numpy's legacy RandomState, so that rella's shuffles and samples match
// the ReLLa authors' (RELLA.md, "The authors' random draws").
//
// Both generators are MT19937 (Matsumoto and Nishimura 1998); they differ in
// seeding and in how they turn its 32-bit words into draws. Use Go's own
// generators for everything the authors did not fix.
package pyrand

const (
	mtN         = 624
	mtM         = 397
	mtMatrixA   = 0x9908b0df
	mtUpperMask = 0x80000000
	mtLowerMask = 0x7fffffff
)

// mt19937 is the Mersenne Twister state.
type mt19937 struct {
	mt  [mtN]uint32
	mti int
}

// initGenrand seeds the state from one 32-bit word.
func (m *mt19937) initGenrand(s uint32) {
	m.mt[0] = s
	for i := 1; i < mtN; i++ {
		m.mt[i] = 1812433253*(m.mt[i-1]^(m.mt[i-1]>>30)) + uint32(i)
	}
	m.mti = mtN
}

// initByArray seeds the state from a key of 32-bit words.
func (m *mt19937) initByArray(key []uint32) {
	m.initGenrand(19650218)
	i, j := 1, 0
	k := max(mtN, len(key))
	for ; k > 0; k-- {
		m.mt[i] = (m.mt[i] ^ ((m.mt[i-1] ^ (m.mt[i-1] >> 30)) * 1664525)) + key[j] + uint32(j)
		i++
		j++
		if i >= mtN {
			m.mt[0] = m.mt[mtN-1]
			i = 1
		}
		if j >= len(key) {
			j = 0
		}
	}
	for k = mtN - 1; k > 0; k-- {
		m.mt[i] = (m.mt[i] ^ ((m.mt[i-1] ^ (m.mt[i-1] >> 30)) * 1566083941)) - uint32(i)
		i++
		if i >= mtN {
			m.mt[0] = m.mt[mtN-1]
			i = 1
		}
	}
	m.mt[0] = 0x80000000
	m.mti = mtN
}

// uint32 returns the next tempered 32-bit word.
func (m *mt19937) uint32() uint32 {
	if m.mti >= mtN {
		var kk int
		for kk = 0; kk < mtN-mtM; kk++ {
			y := (m.mt[kk] & mtUpperMask) | (m.mt[kk+1] & mtLowerMask)
			m.mt[kk] = m.mt[kk+mtM] ^ (y >> 1) ^ (-(y & 1) & mtMatrixA)
		}
		for ; kk < mtN-1; kk++ {
			y := (m.mt[kk] & mtUpperMask) | (m.mt[kk+1] & mtLowerMask)
			m.mt[kk] = m.mt[kk+(mtM-mtN)] ^ (y >> 1) ^ (-(y & 1) & mtMatrixA)
		}
		y := (m.mt[mtN-1] & mtUpperMask) | (m.mt[0] & mtLowerMask)
		m.mt[mtN-1] = m.mt[mtM-1] ^ (y >> 1) ^ (-(y & 1) & mtMatrixA)
		m.mti = 0
	}
	y := m.mt[m.mti]
	m.mti++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}
