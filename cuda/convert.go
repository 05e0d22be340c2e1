package cuda

import (
	"math"
	"runtime"
	"sync"
)

// Host-side conversions between float32 and the 16-bit storage types, used
// to upload weights and inputs and to read results back.

// bf16Bits rounds f to bfloat16 (nearest, ties to even; NaN stays NaN).
func bf16Bits(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7f800000 == 0x7f800000 && u&0x007fffff != 0 {
		return uint16(u>>16) | 0x0040
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// bf16Float widens a bfloat16 to float32 (exact).
func bf16Float(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// f16Bits rounds f to IEEE half precision (nearest, ties to even; overflow
// gives Inf, NaN stays NaN, small values become subnormal or zero).
func f16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	switch {
	case e >= 0x1f:
		return sign | 0x7c00
	case e <= 0:
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint(14 - e)
		r := m >> shift
		rem, half := m&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // a carry into the exponent is the right result, up to Inf
	}
	return sign | uint16(r)
}

// f16Float widens an IEEE half to float32 (exact).
func f16Float(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		v := float32(mant) / (1 << 24)
		if sign != 0 {
			return -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// Round returns v rounded to e's precision (a copy; F32 copies unchanged).
// Tests feed rounded inputs to both the kernel and the reference, so the
// inputs are identical and only the kernel's own rounding remains.
func (e Elem) Round(v []float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		switch e {
		case BF16:
			out[i] = bf16Float(bf16Bits(x))
		case F16:
			out[i] = f16Float(f16Bits(x))
		default:
			out[i] = x
		}
	}
	return out
}

// encode converts v to e's little-endian bytes, large slices in parallel
// (loading a 7B checkpoint converts 6.7e9 values).
func (e Elem) encode(v []float32) []byte {
	out := make([]byte, len(v)*e.Size())
	const chunk = 1 << 20
	if len(v) <= chunk {
		e.encodeInto(out, v)
		return out
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for lo := 0; lo < len(v); lo += chunk {
		hi := min(lo+chunk, len(v))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			e.encodeInto(out[lo*e.Size():hi*e.Size()], v[lo:hi])
			<-sem
		}()
	}
	wg.Wait()
	return out
}

// encodeInto writes v as e's little-endian bytes into out.
func (e Elem) encodeInto(out []byte, v []float32) {
	for i, x := range v {
		switch e {
		case F32:
			u := math.Float32bits(x)
			out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		case BF16:
			u := bf16Bits(x)
			out[2*i], out[2*i+1] = byte(u), byte(u>>8)
		case F16:
			u := f16Bits(x)
			out[2*i], out[2*i+1] = byte(u), byte(u>>8)
		}
	}
}

// decode converts e's little-endian bytes to float32.
func (e Elem) decode(b []byte) []float32 {
	out := make([]float32, len(b)/e.Size())
	for i := range out {
		switch e {
		case F32:
			out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
		case BF16:
			out[i] = bf16Float(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		case F16:
			out[i] = f16Float(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
	}
	return out
}
