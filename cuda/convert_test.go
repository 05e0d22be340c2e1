package cuda

import (
	"math"
	"testing"
)

// Expected half-precision bits from Python's struct.pack('<e', float32(v)).
var f16Cases = [][2]uint32{
	{0x00000000, 0x0000}, {0x80000000, 0x8000}, {0x3f800000, 0x3c00}, {0xc0200000, 0xc100},
	{0x477fe000, 0x7bff}, {0x477ff000, 0x7c00}, {0x477fef00, 0x7bff}, {0x322bcc77, 0x0000},
	{0x3380d959, 0x0001}, {0x33800000, 0x0001}, {0x33000000, 0x0000}, {0x33000001, 0x0001},
	{0x38800000, 0x0400}, {0x387ba882, 0x03ef}, {0x3f802000, 0x3c01}, {0x3f801000, 0x3c00},
	{0x3f803000, 0x3c02}, {0x40490fdb, 0x4248}, {0xc49a522b, 0xe4d3}, {0x3dcccccd, 0x2e66},
	{0x47c35000, 0x7c00}, {0xb76c729a, 0x80ec}, {0xb3b4b11e, 0x8001}, {0xc208d205, 0xd047},
	{0xc3a25915, 0xdd13}, {0xc20d70ba, 0xd06c}, {0xb6192b95, 0x8026}, {0xb50e7eac, 0x8009},
	{0xc1a5f9c6, 0xcd30}, {0xc27189e1, 0xd38c}, {0xb99dc9f5, 0x8cee}, {0x42d10060, 0x5688},
	{0x43b31565, 0x5d99},
}

// Expected bfloat16 bits from Python: frexp, round(m*2^8) (ties to even), rebuild.
var bf16Cases = [][2]uint32{
	{0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, {0x3f80c000, 0x3f81}, {0x3f804000, 0x3f80},
	{0x3f806000, 0x3f80}, {0xc0490fdb, 0xc049}, {0x3dcccccd, 0x3dcd}, {0x7f7f0000, 0x7f7f},
	{0x000116c2, 0x0001}, {0x477fe000, 0x4780}, {0xc714d05b, 0xc715}, {0x5fc61949, 0x5fc6},
	{0xc1dbd6ed, 0xc1dc}, {0x225194fb, 0x2252}, {0xc37c4590, 0xc37c}, {0xcd38e96e, 0xcd39},
	{0x1835580a, 0x1835}, {0x9c01213d, 0x9c01}, {0xe33184b3, 0xe332}, {0x50e8af56, 0x50e9},
}

func TestF16Bits(t *testing.T) {
	for _, c := range f16Cases {
		f := math.Float32frombits(c[0])
		if got := f16Bits(f); uint32(got) != c[1] {
			t.Errorf("f16Bits(%g): got %#04x, want %#04x", f, got, c[1])
		}
	}
	if got := f16Bits(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("f16Bits(NaN) = %#04x, not a NaN", got)
	}
	// Every finite half survives the round trip through float32.
	for h := 0; h < 1<<16; h++ {
		if uint16(h)&0x7c00 == 0x7c00 && uint16(h)&0x3ff != 0 {
			continue
		}
		if got := f16Bits(f16Float(uint16(h))); got != uint16(h) {
			t.Fatalf("f16 round trip of %#04x gave %#04x (%g)", h, got, f16Float(uint16(h)))
		}
	}
	if got := f16Float(0x0001); got != float32(math.Ldexp(1, -24)) {
		t.Errorf("f16Float(0x0001) = %g, want 2^-24", got)
	}
}

func TestBF16Bits(t *testing.T) {
	for _, c := range bf16Cases {
		f := math.Float32frombits(c[0])
		if got := bf16Bits(f); uint32(got) != c[1] {
			t.Errorf("bf16Bits(%g): got %#04x, want %#04x", f, got, c[1])
		}
	}
	if got := bf16Float(bf16Bits(float32(math.NaN()))); !math.IsNaN(float64(got)) {
		t.Errorf("bf16 of NaN came back as %g", got)
	}
}

func TestElemEncodeDecode(t *testing.T) {
	v := []float32{1, -2.5, 0.1, 1000.125, -3e-3}
	for _, e := range []Elem{F32, BF16, F16} {
		got := e.decode(e.encode(v))
		want := e.Round(v)
		for i := range v {
			if got[i] != want[i] {
				t.Errorf("%v: decode(encode(%g)) = %g, want %g", e, v[i], got[i], want[i])
			}
		}
	}
	if F32.Round(v)[2] != 0.1 || BF16.Round(v)[2] == 0.1 {
		t.Errorf("Round: F32 must keep 0.1 exactly and BF16 must not")
	}
}

// TestEncodeParallel checks that the parallel path of encode (more than one
// chunk, a ragged last chunk) writes every value like the serial one.
func TestEncodeParallel(t *testing.T) {
	v := make([]float32, 1<<20*2+12345)
	for i := range v {
		v[i] = float32(i%1000) * 0.37
	}
	for _, e := range []Elem{F32, BF16} {
		got := e.encode(v)
		want := make([]byte, len(v)*e.Size())
		e.encodeInto(want, v)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%v: byte %d: got %d, want %d", e, i, got[i], want[i])
			}
		}
	}
}
