// Package safetensors reads and writes the safetensors format used by HF
// checkpoints, PEFT adapters and rella's own arrays: an 8-byte little-endian
// header length, a JSON header naming each tensor's dtype, shape and byte
// range, then the raw little-endian data. Files are memory-mapped for reading.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"syscall"

	"github.com/rella-project/rella/internal/atomicfile"
)

// DType names a tensor's element type as the format spells it.
type DType string

// The element types rella reads and writes.
const (
	DTypeF32  DType = "F32"
	DTypeF16  DType = "F16"
	DTypeBF16 DType = "BF16"
	DTypeF64  DType = "F64"
	DTypeI64  DType = "I64"
	DTypeI32  DType = "I32"
	DTypeU8   DType = "U8"
)

// Size returns the bytes per element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case DTypeF64, DTypeI64:
		return 8
	case DTypeF32, DTypeI32:
		return 4
	case DTypeF16, DTypeBF16:
		return 2
	case DTypeU8:
		return 1
	}
	return 0
}

// Info describes one tensor: its data lies at [Begin, End) of the data section.
type Info struct {
	Name       string
	DType      DType
	Shape      []int
	Begin, End int64
}

// Elems returns the number of elements the shape holds.
func (i Info) Elems() int {
	n := 1
	for _, d := range i.Shape {
		n *= d
	}
	return n
}

// File is an open, memory-mapped safetensors file.
type File struct {
	path     string
	mapped   []byte // whole file
	data     []byte // data section
	tensors  map[string]Info
	metadata map[string]string
}

// maxHeader bounds the JSON header so a corrupt length cannot ask for gigabytes.
const maxHeader = 100 << 20

// Open memory-maps path and validates its header: every tensor's dtype,
// shape and byte range must be consistent and inside the file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("safetensors: %s: file is %d bytes, too short for a header (truncated?)", path, size)
	}
	mapped, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: mmap: %w", path, err)
	}
	sf, err := parse(path, mapped)
	if err != nil {
		syscall.Munmap(mapped)
		return nil, err
	}
	return sf, nil
}

func parse(path string, mapped []byte) (*File, error) {
	n := binary.LittleEndian.Uint64(mapped[:8])
	if n > maxHeader || int64(n) > int64(len(mapped))-8 {
		return nil, fmt.Errorf("safetensors: %s: header length %d does not fit the %d-byte file (truncated or not safetensors)", path, n, len(mapped))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(mapped[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("safetensors: %s: header is not valid JSON: %w", path, err)
	}
	sf := &File{path: path, mapped: mapped, data: mapped[8+n:], tensors: map[string]Info{}}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &sf.metadata); err != nil {
				return nil, fmt.Errorf("safetensors: %s: __metadata__ must map strings to strings: %w", path, err)
			}
			continue
		}
		var h struct {
			DType   DType    `json:"dtype"`
			Shape   []int    `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &h); err != nil {
			return nil, fmt.Errorf("safetensors: %s: tensor %q: bad header entry: %w", path, name, err)
		}
		info := Info{Name: name, DType: h.DType, Shape: h.Shape, Begin: h.Offsets[0], End: h.Offsets[1]}
		if h.DType.Size() == 0 {
			return nil, fmt.Errorf("safetensors: %s: tensor %q: unsupported dtype %q", path, name, h.DType)
		}
		for _, d := range h.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors: %s: tensor %q: negative dimension in shape %v", path, name, h.Shape)
			}
		}
		want := int64(info.Elems() * h.DType.Size())
		if info.Begin < 0 || info.End < info.Begin || info.End-info.Begin != want {
			return nil, fmt.Errorf("safetensors: %s: tensor %q: data_offsets %v hold %d bytes, shape %v of %s needs %d",
				path, name, h.Offsets, info.End-info.Begin, h.Shape, h.DType, want)
		}
		if info.End > int64(len(sf.data)) {
			return nil, fmt.Errorf("safetensors: %s: tensor %q: data ends at byte %d but the file's data section has %d bytes (truncated?)",
				path, name, info.End, len(sf.data))
		}
		sf.tensors[name] = info
	}
	return sf, nil
}

// Close unmaps the file. Slices returned by Bytes become invalid.
func (f *File) Close() error {
	if f.mapped == nil {
		return nil
	}
	err := syscall.Munmap(f.mapped)
	f.mapped, f.data = nil, nil
	if err != nil {
		return fmt.Errorf("safetensors: %s: munmap: %w", f.path, err)
	}
	return nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Names returns the tensor names, sorted.
func (f *File) Names() []string { return slices.Sorted(maps.Keys(f.tensors)) }

// Info returns the description of the named tensor.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.tensors[name]
	return i, ok
}

// Metadata returns the header's __metadata__ map (nil when absent).
func (f *File) Metadata() map[string]string { return f.metadata }

// Bytes returns the named tensor's raw little-endian bytes. They alias the
// read-only mapping: do not write to them, and do not use them after Close.
func (f *File) Bytes(name string) ([]byte, error) {
	i, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: no tensor %q", f.path, name)
	}
	return f.data[i.Begin:i.End], nil
}

// Float32s returns the named tensor converted to float32 (F32, F16, BF16 or F64).
func (f *File) Float32s(name string) ([]float32, error) {
	b, err := f.Bytes(name)
	if err != nil {
		return nil, err
	}
	i := f.tensors[name]
	out := make([]float32, i.Elems())
	switch i.DType {
	case DTypeF32:
		for k := range out {
			out[k] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*k:]))
		}
	case DTypeBF16:
		for k := range out {
			out[k] = BF16ToF32(binary.LittleEndian.Uint16(b[2*k:]))
		}
	case DTypeF16:
		for k := range out {
			out[k] = F16ToF32(binary.LittleEndian.Uint16(b[2*k:]))
		}
	case DTypeF64:
		for k := range out {
			out[k] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*k:])))
		}
	default:
		return nil, fmt.Errorf("safetensors: %s: tensor %q is %s, want a float type", f.path, name, i.DType)
	}
	return out, nil
}

// Int64s returns the named tensor as int64 (I64 or I32).
func (f *File) Int64s(name string) ([]int64, error) {
	b, err := f.Bytes(name)
	if err != nil {
		return nil, err
	}
	i := f.tensors[name]
	out := make([]int64, i.Elems())
	switch i.DType {
	case DTypeI64:
		for k := range out {
			out[k] = int64(binary.LittleEndian.Uint64(b[8*k:]))
		}
	case DTypeI32:
		for k := range out {
			out[k] = int64(int32(binary.LittleEndian.Uint32(b[4*k:])))
		}
	default:
		return nil, fmt.Errorf("safetensors: %s: tensor %q is %s, want I64 or I32", f.path, name, i.DType)
	}
	return out, nil
}

// Tensor is one tensor to write.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte // little-endian
}

// F32 makes a float32 tensor.
func F32(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, DType: DTypeF32, Shape: shape, Data: b}
}

// BF16 makes a bfloat16 tensor, rounding each value to nearest even.
func BF16(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], F32ToBF16(x))
	}
	return Tensor{Name: name, DType: DTypeBF16, Shape: shape, Data: b}
}

// F16 makes an IEEE half-precision tensor.
func F16(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], F32ToF16(x))
	}
	return Tensor{Name: name, DType: DTypeF16, Shape: shape, Data: b}
}

// I64 makes an int64 tensor.
func I64(name string, shape []int, v []int64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return Tensor{Name: name, DType: DTypeI64, Shape: shape, Data: b}
}

// Encode writes tensors (in the order given) and metadata to w.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	seen := map[string]bool{}
	for _, t := range tensors {
		if seen[t.Name] {
			return fmt.Errorf("safetensors: duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		elems := 1
		for _, d := range t.Shape {
			elems *= d
		}
		if t.DType.Size() == 0 || elems*t.DType.Size() != len(t.Data) {
			return fmt.Errorf("safetensors: tensor %q: %d bytes do not match shape %v of %s", t.Name, len(t.Data), t.Shape, t.DType)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = map[string]any{"dtype": t.DType, "shape": shape, "data_offsets": [2]int64{off, off + int64(len(t.Data))}}
		off += int64(len(t.Data))
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("safetensors: encode header: %w", err)
	}
	// Pad the header with spaces so the data section starts 8-byte aligned.
	if pad := (8 - len(hb)%8) % 8; pad > 0 {
		hb = append(hb, bytes.Repeat([]byte(" "), pad)...)
	}
	var lb [8]byte
	binary.LittleEndian.PutUint64(lb[:], uint64(len(hb)))
	if _, err := w.Write(lb[:]); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	if _, err := w.Write(hb); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("safetensors: write %q: %w", t.Name, err)
		}
	}
	return nil
}

// Write writes tensors and metadata to path atomically: a temporary file in
// the same folder is written, synced and renamed over path, so a reader never
// sees a half-written file and an existing file survives a failed write.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	return WriteAtomic(path, func(w io.Writer) error { return Encode(w, tensors, metadata) })
}

// WriteAtomic creates path through fill atomically (see package atomicfile).
func WriteAtomic(path string, fill func(w io.Writer) error) error {
	return atomicfile.Write(path, fill)
}

// BF16ToF32 widens a bfloat16 bit pattern.
func BF16ToF32(u uint16) float32 { return math.Float32frombits(uint32(u) << 16) }

// F32ToBF16 narrows to bfloat16 with round-to-nearest-even; NaN stays NaN.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToF32 widens an IEEE 754 half-precision bit pattern.
func F16ToF32(u uint16) float32 {
	sign := uint32(u>>15) << 31
	exp := uint32(u>>10) & 0x1f
	frac := uint32(u) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: value = frac * 2^-24
		f := float32(frac) * float32(math.Ldexp(1, -24))
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

// F32ToF16 narrows to IEEE half precision with round-to-nearest-even,
// overflowing to infinity and flushing below the subnormal range to zero.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	frac := b & 0x7fffff
	if exp == 0xff { // Inf or NaN
		if frac != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		m := frac | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | frac>>13
	rem := frac & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}
