package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.safetensors")
	f32 := []float32{1, -2.5, 3.25, 0, float32(math.Inf(1)), -1e-30}
	ids := []int64{7, -1, 1 << 40}
	err := Write(path, []Tensor{
		F32("a", []int{2, 3}, f32),
		I64("ids", []int{3}, ids),
		BF16("b", []int{2}, []float32{1.5, -0.15625}),
		F16("h", []int{1}, []float32{0.5}),
	}, map[string]string{"fingerprint": "abc"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := strings.Join(f.Names(), ","); got != "a,b,h,ids" {
		t.Errorf("names: got %s, want a,b,h,ids", got)
	}
	if f.Metadata()["fingerprint"] != "abc" {
		t.Errorf("metadata: got %v", f.Metadata())
	}
	got, err := f.Float32s("a")
	if err != nil {
		t.Fatal(err)
	}
	for i := range f32 {
		if math.Float32bits(got[i]) != math.Float32bits(f32[i]) {
			t.Errorf("a[%d]: got %v, want %v", i, got[i], f32[i])
		}
	}
	if info, _ := f.Info("a"); info.Shape[0] != 2 || info.Shape[1] != 3 {
		t.Errorf("shape: got %v, want [2 3]", info.Shape)
	}
	gi, err := f.Int64s("ids")
	if err != nil || gi[0] != 7 || gi[1] != -1 || gi[2] != 1<<40 {
		t.Errorf("ids: got %v, %v", gi, err)
	}
	b, _ := f.Float32s("b")
	if b[0] != 1.5 || b[1] != -0.15625 {
		t.Errorf("bf16: got %v, want [1.5 -0.15625]", b)
	}
	h, _ := f.Float32s("h")
	if h[0] != 0.5 {
		t.Errorf("f16: got %v, want 0.5", h)
	}
	// The data section must start 8-byte aligned.
	raw, _ := os.ReadFile(path)
	if n := binary.LittleEndian.Uint64(raw); (8+n)%8 != 0 {
		t.Errorf("header length %d leaves the data unaligned", n)
	}
}

func TestCorruptFilesNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.safetensors")
	if err := Write(good, []Tensor{F32("w", []int{4, 4}, make([]float32, 16))}, nil); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"truncated data":   {raw[:len(raw)-5], `tensor "w": data ends at byte 64`},
		"truncated header": {raw[:20], "header length"},
		"tiny":             {raw[:3], "too short"},
		"bad json":         {append(append([]byte{}, raw[:8]...), bytes.Repeat([]byte("{"), len(raw)-8)...), "not valid JSON"},
	}
	for name, c := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, c.data, 0o644)
		_, err := Open(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: got error %v, want one naming %s and containing %q", name, err, p, c.want)
		}
	}
	// Offsets that disagree with the shape.
	hdr := `{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,60]}}`
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, uint64(len(hdr)))
	buf.WriteString(hdr)
	buf.Write(make([]byte, 64))
	p := filepath.Join(dir, "shape.safetensors")
	os.WriteFile(p, buf.Bytes(), 0o644)
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), "needs 64") {
		t.Errorf("shape mismatch: got %v", err)
	}
}

func TestWriteFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.safetensors")
	if err := Write(p, []Tensor{F32("a", []int{1}, []float32{1})}, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	bad := Tensor{Name: "a", DType: DTypeF32, Shape: []int{2}, Data: make([]byte, 4)}
	if err := Write(p, []Tensor{bad}, nil); err == nil {
		t.Fatal("want an error for a tensor whose bytes do not match its shape")
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(before, after) {
		t.Error("a failed write changed the existing file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("a failed write left %d files, want 1", len(entries))
	}
}

// Expected half-precision bits from Python's struct.pack('<e', v).
func TestF16AgainstPython(t *testing.T) {
	cases := []struct {
		v    float64
		bits uint16
	}{{0.0, 0x0000}, {math.Copysign(0, -1), 0x8000}, {1.0, 0x3c00}, {-2.5, 0xc100}, {65504.0, 0x7bff}, {65520.0, 0x7c00}, {1e-08, 0x0000}, {6.1e-05, 0x03ff}, {5.96e-08, 0x0001}, {2.98e-08, 0x0000}, {3e-08, 0x0001}, {0.1, 0x2e66}, {1.0009765625, 0x3c01}, {1.00048828125, 0x3c00}, {1.00146484375, 0x3c02}, {3.14159, 0x4248}, {-70000.0, 0xfc00}, {0.0001, 0x068e}}
	for _, c := range cases {
		if got := F32ToF16(float32(c.v)); got != c.bits {
			t.Errorf("F32ToF16(%v): got %#04x, want %#04x", c.v, got, c.bits)
		}
	}
	// Every finite half survives a round trip through float32.
	for u := 0; u < 1<<16; u++ {
		if u&0x7c00 == 0x7c00 && u&0x3ff != 0 {
			continue // NaN
		}
		if got := F32ToF16(F16ToF32(uint16(u))); got != uint16(u) {
			t.Fatalf("half %#04x: round trip gives %#04x", u, got)
		}
	}
}

// F32ToBF16 must return the nearest bfloat16, ties to even, checked against
// the two candidates by brute force.
func TestBF16NearestEven(t *testing.T) {
	vals := []float32{1, 1.00390625, 1.005859375, 3.1415927, -2.7182817, 1e-38, 3.38e38, 0.1, 65504}
	for i := 0; i < 2000; i++ {
		vals = append(vals, math.Float32frombits(uint32(i)*2147483+12345))
	}
	for _, v := range vals {
		if v != v || math.IsInf(float64(v), 0) || math.Abs(float64(v)) > 3.38e38 { // IEEE rounds past the largest bfloat16 to infinity
			continue
		}
		got := F32ToBF16(v)
		lo := uint16(math.Float32bits(v) >> 16)
		best := lo
		dlo := math.Abs(float64(BF16ToF32(lo)) - float64(v))
		dhi := math.Abs(float64(BF16ToF32(lo+1)) - float64(v))
		if dhi < dlo || (dhi == dlo && lo&1 == 1) {
			best = lo + 1
		}
		if got != best {
			t.Errorf("F32ToBF16(%g): got %#04x, want %#04x", v, got, best)
		}
	}
}
