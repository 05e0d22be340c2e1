// Package kernelexec executes rella's CUDA kernel source (cuda/kernels/*.cu,
// joined exactly as the GPU build hands it to NVRTC) on the CPU, so that the
// tests can compare every kernel with the Go references of package cuda
// without a GPU.
//
// The source is compiled by g++ as C++ together with cudacpu.h (a small
// CUDA execution model: one fiber per CUDA thread, __syncthreads as a
// barrier over the block's live threads, warp shuffles among 32 lanes,
// deadlock detection, NaN-filled shared memory, guard zones around buffers)
// and harness.cpp (a binary protocol on stdin/stdout). Each Launch runs the
// compiled harness once for one kernel launch. Binaries are cached under
// the user's cache directory, keyed by a hash of everything compiled.
//
// Nothing in the GPU build imports this package.
package kernelexec

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rella-project/rella/cuda"
)

//go:embed csrc/cudacpu.h
var compatHeader string

//go:embed csrc/harness.cpp
var harnessSource string

// CompileFlags are the g++ flags of every harness: no contraction of
// multiply-add (the device's double-precision AdamW is written unfused), and
// no interprocedural assumption that a fiber switch leaves the kernels'
// static (__shared__) arrays untouched.
var CompileFlags = []string{"-std=c++17", "-O2", "-ffp-contract=off", "-fno-ipa-reference", "-fno-ipa-reference-addressable",
	"-fno-ipa-modref", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-function"}

// ErrNoCompiler is returned by Build when g++ is not on PATH.
var ErrNoCompiler = errors.New("kernelexec: g++ not found (Debian: apt-get install g++)")

// Harness is the kernel source compiled for the CPU with one storage type.
type Harness struct {
	Elem cuda.Elem
	Path string // the executable
}

// Build compiles src (the joined kernel source, cuda.KernelSource() or a
// mutation of it) with e's macro, or returns the cached binary of an
// identical earlier build. It reports whether it compiled.
func Build(ctx context.Context, src string, e cuda.Elem) (h *Harness, compiled bool, err error) {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		return nil, false, ErrNoCompiler
	}
	kinds, err := cuda.KernelParamKinds(src)
	if err != nil {
		return nil, false, fmt.Errorf("kernelexec: %w", err)
	}
	if len(kinds) == 0 {
		return nil, false, errors.New("kernelexec: the source declares no extern \"C\" __global__ kernel")
	}
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	var dispatch strings.Builder
	for _, n := range names {
		fmt.Fprintf(&dispatch, "CUDACPU_KERNEL(%s)\n", n)
	}
	version, err := exec.CommandContext(ctx, gxx, "--version").Output()
	if err != nil {
		return nil, false, fmt.Errorf("kernelexec: g++ --version: %w", err)
	}
	args := append(append([]string{}, CompileFlags...), e.Macro())
	sum := sha256.New()
	for _, part := range []string{compatHeader, harnessSource, src, dispatch.String(), strings.Join(args, " "), string(version)} {
		fmt.Fprintf(sum, "%d:%s", len(part), part)
	}
	key := hex.EncodeToString(sum.Sum(nil))[:24]
	dir, err := cacheDir()
	if err != nil {
		return nil, false, err
	}
	bin := filepath.Join(dir, fmt.Sprintf("harness-%v-%s", e, key))
	if st, err := os.Stat(bin); err == nil && st.Mode().IsRegular() && st.Mode()&0o100 != 0 {
		return &Harness{Elem: e, Path: bin}, false, nil
	}
	work, err := os.MkdirTemp("", "kernelexec-")
	if err != nil {
		return nil, false, fmt.Errorf("kernelexec: %w", err)
	}
	defer os.RemoveAll(work)
	files := map[string]string{"cudacpu.h": compatHeader, "harness.cpp": harnessSource, "kernels.cu": src, "dispatch.inc": dispatch.String()}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(text), 0o644); err != nil {
			return nil, false, fmt.Errorf("kernelexec: %w", err)
		}
	}
	tmp := filepath.Join(work, "harness")
	cmd := exec.CommandContext(ctx, gxx, append(args, "-o", tmp, "harness.cpp")...)
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, false, fmt.Errorf("kernelexec: g++ %s for %v: %w\n%s", strings.Join(args, " "), e, err, out)
	}
	// Rename within the cache directory: a concurrent build of the same key
	// replaces the file with an identical one.
	staged := bin + fmt.Sprintf(".tmp%d", os.Getpid())
	data, err := os.ReadFile(tmp)
	if err == nil {
		err = os.WriteFile(staged, data, 0o755)
	}
	if err == nil {
		err = os.Rename(staged, bin)
	}
	if err != nil {
		os.Remove(staged)
		return nil, false, fmt.Errorf("kernelexec: caching the harness: %w", err)
	}
	return &Harness{Elem: e, Path: bin}, true, nil
}

// cacheDir is $RELLA_KERNELEXEC_CACHE, else rella/kernelexec under the
// user's cache directory (the system temp directory when there is none).
func cacheDir() (string, error) {
	dir := os.Getenv("RELLA_KERNELEXEC_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "rella", "kernelexec")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("kernelexec: cache directory: %w", err)
	}
	return dir, nil
}

// Schedule is the order in which the harness runs blocks and threads.
type Schedule uint32

const (
	// InOrder runs blocks in grid order and resumes threads in thread order.
	InOrder Schedule = 0
	// Skewed runs blocks in a seeded random order; in each block one warp
	// chosen by the seed runs as far as it can (up to a barrier) before the
	// other threads, which are resumed in a fresh random order.
	Skewed Schedule = 1
)

func (s Schedule) String() string {
	if s == Skewed {
		return "skewed"
	}
	return "in-order"
}

// Dim is a CUDA dim3.
type Dim [3]uint32

// Buf is a kernel's memory argument; Launch replaces Data with its contents
// after the kernel ran.
type Buf struct{ Data []byte }

// Launch runs kernel name over grid x block threads with args, each a *Buf
// (a pointer parameter), int32 or int (int), int64 (long long) or float32
// (float). A kernel fault (deadlock, divergent barrier, a write outside a
// buffer, a crash) is an error naming the kernel.
func (h *Harness) Launch(ctx context.Context, name string, grid, block Dim, sched Schedule, seed uint64, args ...any) error {
	var req bytes.Buffer
	w := func(v any) { binary.Write(&req, binary.LittleEndian, v) }
	w(uint32(len(name)))
	req.WriteString(name)
	w(grid)
	w(block)
	w(uint32(sched))
	w(seed)
	var bufs []*Buf
	index := map[*Buf]uint32{}
	for _, a := range args {
		if b, ok := a.(*Buf); ok {
			if _, seen := index[b]; !seen {
				index[b] = uint32(len(bufs))
				bufs = append(bufs, b)
			}
		}
	}
	w(uint32(len(bufs)))
	for _, b := range bufs {
		w(uint64(len(b.Data)))
		req.Write(b.Data)
	}
	w(uint32(len(args)))
	for i, a := range args {
		switch v := a.(type) {
		case *Buf:
			req.WriteByte('p')
			w(index[v])
		case int:
			if v != int(int32(v)) {
				return fmt.Errorf("kernelexec: %s: argument %d (%d) does not fit an int", name, i, v)
			}
			req.WriteByte('i')
			w(int32(v))
		case int32:
			req.WriteByte('i')
			w(v)
		case int64:
			req.WriteByte('l')
			w(v)
		case float32:
			req.WriteByte('f')
			w(math.Float32bits(v))
		default:
			return fmt.Errorf("kernelexec: %s: argument %d has type %T", name, i, a)
		}
	}
	cmd := exec.CommandContext(ctx, h.Path)
	cmd.Stdin = &req
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kernelexec: %s (%v, %v): the harness failed: %w %s", name, h.Elem, sched, err, strings.TrimSpace(stderr.String()))
	}
	rep := stdout.Bytes()
	if len(rep) < 4 {
		return fmt.Errorf("kernelexec: %s (%v, %v): short reply (%d bytes)", name, h.Elem, sched, len(rep))
	}
	if st := binary.LittleEndian.Uint32(rep); st != 0 {
		msg := rep[4:]
		if len(msg) >= 4 {
			msg = msg[4:]
		}
		return fmt.Errorf("kernelexec: %s (%v, %v): %s", name, h.Elem, sched, msg)
	}
	rep = rep[4:]
	for _, b := range bufs {
		if len(rep) < len(b.Data) {
			return fmt.Errorf("kernelexec: %s: reply ends inside a buffer", name)
		}
		copy(b.Data, rep[:len(b.Data)])
		rep = rep[len(b.Data):]
	}
	if len(rep) != 0 {
		return fmt.Errorf("kernelexec: %s: %d extra bytes in the reply", name, len(rep))
	}
	return nil
}
