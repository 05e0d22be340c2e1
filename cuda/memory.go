//go:build rellagpu

package cuda

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// Buffer is a block of device memory from the device's caching allocator.
type Buffer struct {
	ptr  C.CUdeviceptr
	size int64 // bytes requested
	cap  int64 // bytes of the block
}

// Bytes is the requested size of the buffer.
func (b Buffer) Bytes() int64 { return b.size }

// allocator caches freed blocks by rounded size and reuses them, so a
// forward pass that allocates the same shapes every call stops calling
// cuMemAlloc (which synchronises the device) after its first call. When
// cuMemAlloc runs out of memory it frees the cache and tries once more.
type allocator struct {
	free          map[int64][]C.CUdeviceptr
	cached, inUse int64
}

// roundSize rounds small requests up to 512 bytes and large ones to 2 MiB,
// so that similar shapes share blocks.
func roundSize(n int64) int64 {
	const small, large = 512, 2 << 20
	if n < 1<<20 {
		return (n + small - 1) / small * small
	}
	return (n + large - 1) / large * large
}

// Alloc returns a buffer of n bytes (inside Do).
func (d *Device) Alloc(n int64) (Buffer, error) {
	if n <= 0 {
		n = 1
	}
	a := &d.alloc
	c := roundSize(n)
	if l := a.free[c]; len(l) > 0 {
		p := l[len(l)-1]
		a.free[c] = l[:len(l)-1]
		a.cached -= c
		a.inUse += c
		return Buffer{ptr: p, size: n, cap: c}, nil
	}
	var p C.CUdeviceptr
	err := check("cuMemAlloc", C.r_cuMemAlloc(&p, C.size_t(c)))
	var ce *Error
	if errors.As(err, &ce) && ce.Code == errOutOfMemory && a.cached > 0 {
		a.trim()
		err = check("cuMemAlloc", C.r_cuMemAlloc(&p, C.size_t(c)))
	}
	if err != nil {
		free, _, _ := d.MemInfo()
		return Buffer{}, fmt.Errorf("%w (asked for %d bytes; %d in use, %d free)", err, c, a.inUse, free)
	}
	a.inUse += c
	return Buffer{ptr: p, size: n, cap: c}, nil
}

// Free returns b to the cache (inside Do). Work queued on the device's one
// stream that still reads b is ordered before any later use of the block.
func (d *Device) Free(b Buffer) {
	if b.ptr == 0 {
		return
	}
	a := &d.alloc
	if a.free == nil {
		a.free = map[int64][]C.CUdeviceptr{}
	}
	a.free[b.cap] = append(a.free[b.cap], b.ptr)
	a.inUse -= b.cap
	a.cached += b.cap
}

// trim frees every cached block.
func (a *allocator) trim() {
	C.r_cuCtxSynchronize()
	for c, l := range a.free {
		for _, p := range l {
			C.r_cuMemFree(p)
		}
		a.cached -= c * int64(len(l))
	}
	a.free = nil
}

// Upload copies b's host bytes into dst (inside Do). The source may be
// reused on return (pageable memory is staged before the call returns).
func (d *Device) Upload(dst Buffer, src []byte) error {
	if int64(len(src)) > dst.size {
		return fmt.Errorf("cuda: upload of %d bytes into a buffer of %d", len(src), dst.size)
	}
	if len(src) == 0 {
		return nil
	}
	return check("cuMemcpyHtoDAsync", C.r_cuMemcpyHtoDAsync(dst.ptr, unsafe.Pointer(&src[0]), C.size_t(len(src)), d.stream))
}

// Download copies len(dst) bytes from src into dst and waits for the copy (inside Do).
func (d *Device) Download(dst []byte, src Buffer) error {
	if int64(len(dst)) > src.size {
		return fmt.Errorf("cuda: download of %d bytes from a buffer of %d", len(dst), src.size)
	}
	if len(dst) == 0 {
		return nil
	}
	if err := check("cuMemcpyDtoHAsync", C.r_cuMemcpyDtoHAsync(unsafe.Pointer(&dst[0]), src.ptr, C.size_t(len(dst)), d.stream)); err != nil {
		return err
	}
	return d.Sync()
}

// Poison fills b with NaN of type e (inside Do), so that a test sees every
// element a kernel failed to write.
func (d *Device) Poison(b Buffer, e Elem) error {
	if e == F32 {
		return check("cuMemsetD32Async", C.r_cuMemsetD32Async(b.ptr, 0x7fc00000, C.size_t(b.size/4), d.stream))
	}
	nan := C.ushort(0x7fc0) // bf16 quiet NaN
	if e == F16 {
		nan = 0x7e00
	}
	return check("cuMemsetD16Async", C.r_cuMemsetD16Async(b.ptr, nan, C.size_t(b.size/2), d.stream))
}

// uploadFloats uploads v as type e into a new buffer (inside Do).
func (d *Device) uploadFloats(v []float32, e Elem) (Buffer, error) {
	b, err := d.Alloc(int64(len(v) * e.Size()))
	if err != nil {
		return Buffer{}, err
	}
	if err := d.Upload(b, e.encode(v)); err != nil {
		d.Free(b)
		return Buffer{}, err
	}
	return b, nil
}

// uploadInts uploads v as int32 into a new buffer (inside Do).
func (d *Device) uploadInts(v []int) (Buffer, error) {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return Buffer{}, fmt.Errorf("cuda: value %d does not fit in int32", x)
		}
		u := uint32(int32(x))
		raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	b, err := d.Alloc(int64(len(raw)))
	if err != nil {
		return Buffer{}, err
	}
	if err := d.Upload(b, raw); err != nil {
		d.Free(b)
		return Buffer{}, err
	}
	return b, nil
}

// downloadFloats reads n values of type e from b (inside Do).
func (d *Device) downloadFloats(b Buffer, n int, e Elem) ([]float32, error) {
	raw := make([]byte, n*e.Size())
	if err := d.Download(raw, b); err != nil {
		return nil, err
	}
	return e.decode(raw), nil
}

// dim3 is a grid or block shape.
type dim3 struct{ x, y, z uint32 }

// launch queues kernel f on the device's stream (inside Do). Each argument
// is a Buffer (passed as its device pointer), an int (passed as a 32-bit
// int, checked), int32, int64 or float32, and must match the kind of the
// kernel's parameter in the source.
func (d *Device) launch(f *kernel, grid, block dim3, smem uint32, args ...any) error {
	var vals [32]C.uint64_t
	if len(args) > len(vals) {
		return fmt.Errorf("cuda: %s: %d arguments, at most %d", f.name, len(args), len(vals))
	}
	if len(args) != len(f.params) {
		return fmt.Errorf("cuda: %s: %d arguments, the kernel takes %d", f.name, len(args), len(f.params))
	}
	for i, a := range args {
		var kind paramKind
		switch v := a.(type) {
		case Buffer:
			vals[i], kind = C.uint64_t(v.ptr), pPtr
		case int:
			if v < math.MinInt32 || v > math.MaxInt32 {
				return fmt.Errorf("cuda: %s: argument %d = %d does not fit in int32", f.name, i, v)
			}
			vals[i], kind = C.uint64_t(uint32(int32(v))), pI32
		case int32:
			vals[i], kind = C.uint64_t(uint32(v)), pI32
		case int64:
			vals[i], kind = C.uint64_t(uint64(v)), pI64
		case float32:
			vals[i], kind = C.uint64_t(math.Float32bits(v)), pF32
		default:
			return fmt.Errorf("cuda: %s: argument %d has unsupported type %T", f.name, i, a)
		}
		if kind != f.params[i] {
			return fmt.Errorf("cuda: %s: argument %d is a %T, the kernel wants kind %c", f.name, i, a, f.params[i])
		}
	}
	if grid.x == 0 || grid.y == 0 || grid.z == 0 {
		return nil // nothing to do
	}
	r := C.r_launch(f.fn, C.uint(grid.x), C.uint(grid.y), C.uint(grid.z), C.uint(block.x), C.uint(block.y), C.uint(block.z),
		C.uint(smem), d.stream, &vals[0], C.int(len(args)))
	if err := check("cuLaunchKernel", r); err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	return nil
}

// Ptr is the buffer's device address, for libraries that take raw device
// pointers (NCCL).
func (b Buffer) Ptr() uintptr { return uintptr(b.ptr) }
