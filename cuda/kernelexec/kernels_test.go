package kernelexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rella-project/rella/cuda"
)

// requireCompiler: scripts/test.sh sets RELLA_KERNELEXEC_REQUIRED=1 after
// making sure g++ is installed, so that CI fails instead of skipping.
func build(t testing.TB, src string, e cuda.Elem) *Harness {
	t.Helper()
	start := time.Now()
	h, compiled, err := Build(context.Background(), src, e)
	if errors.Is(err, ErrNoCompiler) {
		if os.Getenv("RELLA_KERNELEXEC_REQUIRED") == "1" {
			t.Fatalf("%v, and RELLA_KERNELEXEC_REQUIRED=1", err)
		}
		t.Skipf("%v: the kernel source is not executed on the CPU", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if compiled {
		t.Logf("compiled the %v harness in %v", e, time.Since(start).Round(time.Millisecond))
	}
	return h
}

// testSeed is the inputs' seed: RELLA_KERNELEXEC_SEED, else fixed.
func testSeed(t testing.TB) uint64 {
	if s := os.Getenv("RELLA_KERNELEXEC_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RELLA_KERNELEXEC_SEED=%q: %v", s, err)
		}
		return v
	}
	return 20261203
}

var (
	harnessMu sync.Mutex
	harnesses = map[cuda.Elem]*harnessOnce{}
)

type harnessOnce struct {
	once sync.Once
	h    *Harness
	err  error
}

// sourceHarness builds the unmodified source for e once per test binary.
func sourceHarness(t testing.TB, e cuda.Elem) *Harness {
	harnessMu.Lock()
	o := harnesses[e]
	if o == nil {
		o = &harnessOnce{}
		harnesses[e] = o
	}
	harnessMu.Unlock()
	o.once.Do(func() {
		start := time.Now()
		var compiled bool
		o.h, compiled, o.err = Build(context.Background(), cuda.KernelSource(), e)
		if compiled {
			t.Logf("compiled the %v harness in %v", e, time.Since(start).Round(time.Millisecond))
		}
	})
	if errors.Is(o.err, ErrNoCompiler) {
		build(t, "", e) // skips or fails as build does
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.h
}

// TestKernelSourceOnCPU executes every kernel of the source the GPU build
// compiles (llama.cu + train.cu as cuda.KernelSource joins them) for f32,
// bf16 and fp16 storage, in thread order and in a seeded skewed schedule,
// and compares each with its Go reference (see suite_test.go).
func TestKernelSourceOnCPU(t *testing.T) {
	seed := testSeed(t)
	for _, e := range []cuda.Elem{cuda.F32, cuda.BF16, cuda.F16} {
		for _, sched := range []Schedule{InOrder, Skewed} {
			t.Run(fmt.Sprintf("%v/%v", e, sched), func(t *testing.T) {
				t.Parallel()
				h := sourceHarness(t, e)
				start := time.Now()
				s := newSuite(context.Background(), h, sched, seed)
				if testing.Verbose() {
					s.timing = map[string]time.Duration{}
				}
				s.all()
				for _, f := range s.fails {
					t.Error(f)
				}
				kinds, err := cuda.KernelParamKinds(cuda.KernelSource())
				if err != nil {
					t.Fatal(err)
				}
				for name := range kinds {
					if !s.launched[name] {
						t.Errorf("kernel %s of the source is not run by the suite (add a case to suite_test.go)", name)
					}
				}
				t.Logf("%d case groups in %v", s.cases, time.Since(start).Round(time.Millisecond))
				for name, d := range s.timing {
					t.Logf("  %-16s %v", name, d.Round(time.Millisecond))
				}
			})
		}
	}
}

// The runtime's own checks, on small kernels written for them.
const runtimeSource = `
#define FULL 0xffffffffu
extern "C" __global__ void block_reverse(float* out, const float* in, int n) {
	__shared__ float buf[256];
	int t = threadIdx.x;
	buf[t] = t < n ? in[t] : 0.f;
	__syncthreads();
	if (t < n) out[t] = buf[n - 1 - t];
}
extern "C" __global__ void block_reverse_racy(float* out, const float* in, int n) {
	__shared__ float buf[256];
	int t = threadIdx.x;
	buf[t] = t < n ? in[t] : 0.f;
	if (t < n) out[t] = buf[n - 1 - t];
}
extern "C" __global__ void early_exit_barrier(float* out, int n) {
	int t = threadIdx.x;
	if (t >= n) return;  // exited threads do not hold the barrier
	__shared__ float buf[256];
	buf[t] = (float)t;
	__syncthreads();
	out[t] = buf[(t + 1) % n];
}
extern "C" __global__ void shuffle_rotate(float* out, int n) {
	int t = blockIdx.x * blockDim.x + threadIdx.x;
	float v = (float)t;
	v = __shfl_sync(FULL, v, (threadIdx.x + 1) % 32);
	v += __shfl_xor_sync(FULL, v, 16) * 1000.f;
	if (t < n) out[t] = v;
}
extern "C" __global__ void divergent_barrier(float* out, int n) {
	if (threadIdx.x < 32) __syncthreads();
	else __syncthreads();
	out[threadIdx.x] = 1.f;
}
extern "C" __global__ void shuffle_after_exit(float* out, int n) {
	if (threadIdx.x % 32 == 5) return;
	out[threadIdx.x] = __shfl_xor_sync(FULL, 1.f, 1);
}
extern "C" __global__ void barrier_vs_shuffle(float* out, int n) {
	float v = 1.f;
	if (threadIdx.x % 32 == 0) __syncthreads();
	else v = __shfl_sync(FULL, v, 0);
	out[threadIdx.x] = v;
}
extern "C" __global__ void write_past_end(float* out, int n) {
	out[threadIdx.x + 1] = 1.f;
}
extern "C" __global__ void read_unwritten_shared(float* out, int n) {
	__shared__ float buf[256];
	if (threadIdx.x % 2 == 0) buf[threadIdx.x] = 1.f;
	__syncthreads();
	out[threadIdx.x] = buf[threadIdx.x];
}
`

// TestRuntimeSemantics checks the execution model on kernels with known
// outcomes: barriers order shared memory, exited threads do not hold a
// barrier, shuffles exchange within a warp, and a race, a divergent
// barrier, a shuffle waiting for an exited lane, a barrier/shuffle deadlock,
// a write past a buffer and a read of unwritten shared memory are caught.
func TestRuntimeSemantics(t *testing.T) {
	h := build(t, runtimeSource, cuda.F32)
	ctx := context.Background()
	const n = 200
	inv := make([]float32, n)
	for i := range inv {
		inv[i] = float32(i)
	}
	for _, sched := range []Schedule{InOrder, Skewed} {
		outb := out(n, cuda.F32)
		if err := h.Launch(ctx, "block_reverse", Dim{1, 1, 1}, Dim{256, 1, 1}, sched, 1, outb, &Buf{Data: cuda.F32.Encode(inv)}, n); err != nil {
			t.Fatal(err)
		}
		for i, v := range outb.floats(cuda.F32) {
			if v != float32(n-1-i) {
				t.Fatalf("%v block_reverse[%d] = %v, want %v", sched, i, v, n-1-i)
			}
		}
		outb = out(n, cuda.F32)
		if err := h.Launch(ctx, "block_reverse_racy", Dim{1, 1, 1}, Dim{256, 1, 1}, sched, 1, outb, &Buf{Data: cuda.F32.Encode(inv)}, n); err != nil {
			t.Fatal(err)
		}
		wrong := 0
		for i, v := range outb.floats(cuda.F32) {
			if v != float32(n-1-i) {
				wrong++
			}
		}
		if wrong == 0 {
			t.Errorf("%v: the racy reversal (no barrier) gave the right answer: the schedule hides the race", sched)
		}
		outb = out(n, cuda.F32)
		if err := h.Launch(ctx, "early_exit_barrier", Dim{1, 1, 1}, Dim{256, 1, 1}, sched, 1, outb, 150); err != nil {
			t.Fatal(err)
		}
		for i, v := range outb.floats(cuda.F32)[:150] {
			if v != float32((i+1)%150) {
				t.Fatalf("%v early_exit_barrier[%d] = %v", sched, i, v)
			}
		}
		outb = out(96, cuda.F32)
		if err := h.Launch(ctx, "shuffle_rotate", Dim{3, 1, 1}, Dim{32, 1, 1}, sched, 1, outb, 96); err != nil {
			t.Fatal(err)
		}
		for i, v := range outb.floats(cuda.F32) {
			w, l := i/32*32, i%32
			rot := func(l int) float32 { return float32(w + (l+1)%32) }
			if want := rot(l) + rot(l^16)*1000; v != want {
				t.Fatalf("%v shuffle_rotate[%d] = %v, want %v", sched, i, v, want)
			}
		}
		for _, k := range []struct{ name, want string }{
			{"divergent_barrier", "divergent barrier"},
			{"shuffle_after_exit", "which has exited"},
			{"barrier_vs_shuffle", "deadlock"},
			{"write_past_end", "wrote outside buffer"},
		} {
			err := h.Launch(ctx, k.name, Dim{1, 1, 1}, Dim{64, 1, 1}, sched, 1, out(64, cuda.F32), 64)
			if err == nil || !strings.Contains(err.Error(), k.want) {
				t.Errorf("%v %s: got error %v, want one saying %q", sched, k.name, err, k.want)
			}
		}
		outb = out(64, cuda.F32)
		if err := h.Launch(ctx, "read_unwritten_shared", Dim{1, 1, 1}, Dim{64, 1, 1}, sched, 1, outb, 64); err != nil {
			t.Fatal(err)
		}
		if got := outb.floats(cuda.F32); got[0] != 1 || got[1] == got[1] {
			t.Errorf("%v: unwritten shared memory read %v (element 1), want NaN", sched, got[1])
		}
	}
	if err := h.Launch(ctx, "block_reverse", Dim{1, 1, 1}, Dim{256, 1, 1}, InOrder, 1, out(n, cuda.F32), int64(3), n); err == nil ||
		!strings.Contains(err.Error(), "arguments of kinds") {
		t.Errorf("a launch with wrong argument kinds: got %v", err)
	}
}
