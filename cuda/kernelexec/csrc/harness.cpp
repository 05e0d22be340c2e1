// harness.cpp: runs one kernel of rella's CUDA source on the CPU (see
// cudacpu.h for the execution model) and speaks a small binary protocol on
// stdin/stdout with the Go tests in this folder (harness.go):
//
// request (little endian):
//   u32 len, name; u32 grid[3], block[3]; u32 mode; u64 seed;
//   u32 nbufs, then per buffer u64 size and its bytes;
//   u32 nargs, then per argument u8 kind ('p' u32 buffer index, 'i' i32,
//   'l' i64, 'f' f32 bits).
// reply: u32 status (0 ok), then either every buffer's bytes in order, or
//   u32 len and an error message.
//
// Each buffer lies between two 64-byte guard zones of 0xff bytes (NaN in
// every storage type, so a read just past a buffer shows in the output); a
// kernel that writes into one fails the run ("wrote outside buffer").
// The file is compiled as one translation unit with the kernel source:
//   #include "cudacpu.h", the joined kernels.cu, this file's runtime, and
//   dispatch.inc (one line per extern "C" kernel, written by harness.go).
#include "cudacpu.h"
#include "kernels.cu"

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

// ---- fibers ----

extern "C" void cudacpu_switch(void** save_sp, void* to_sp);
extern "C" void cudacpu_fiber_start();
extern "C" void cudacpu_fiber_main();

#if defined(__x86_64__)
asm(R"(
	.text
	.globl cudacpu_switch
	.type cudacpu_switch,@function
cudacpu_switch:
	pushq %rbp
	pushq %rbx
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, (%rdi)
	movq %rsi, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %rbx
	popq %rbp
	ret
	.size cudacpu_switch,.-cudacpu_switch
	.globl cudacpu_fiber_start
	.type cudacpu_fiber_start,@function
cudacpu_fiber_start:
	andq $-16, %rsp
	call cudacpu_fiber_main
	ud2
	.size cudacpu_fiber_start,.-cudacpu_fiber_start
)");
#else
#error "cudacpu: the fiber switch is written for x86-64 only"
#endif

namespace {

constexpr size_t kStack = 256 << 10;  // per CUDA thread
constexpr int kMaxThreads = 1024;

[[noreturn]] void fail(const std::string& msg);

enum WaitKind { kRunning, kBarrier, kShuffle, kDone };

struct Fiber {
	void* sp = nullptr;
	char* stack = nullptr;  // mmap'ed, lowest page a guard
	uint3 tid{};
	int linear = 0;
	WaitKind wait = kRunning;
	long long bars = 0;  // barriers entered
	long long shfs = 0;  // shuffles entered
	int line = 0;        // source line of the current wait
};

// Counters of entries into barrier or shuffle number gen, in a ring of 4
// (at most two numbers are in progress at once: a thread can enter number
// g+1 only after all have entered g).
struct Slot {
	long long gen;
	int count;
	int line;
};

struct Warp {
	unsigned long long val[2][32];
	Slot slot[4];
	int exited;
};

Fiber fibers[kMaxThreads];
Warp warps[kMaxThreads / 32];
int nthreads = 0, exited = 0;
Slot bar_slot[4];
long long bar_done = 0;  // the highest barrier all live threads have entered
Fiber* cur = nullptr;
void* sched_sp = nullptr;
void (*kernel_run)() = nullptr;  // runs the kernel with the request's arguments

extern "C" char __start_cudacpu_shared[] __attribute__((weak));
extern "C" char __stop_cudacpu_shared[] __attribute__((weak));

// enter counts one entry into number g of a ring and returns its slot.
Slot& enter(Slot* ring, long long g, int line) {
	Slot& s = ring[g & 3];
	if (s.gen != g) {
		s.gen = g;
		s.count = 0;
		s.line = line;
	}
	s.count++;
	return s;
}

// A barrier b is complete when every thread that has not exited has
// entered it: while it is incomplete no thread has passed it, so every
// exited thread stopped before it.
bool barrier_ready(long long b) {
	if (bar_done >= b) return true;
	const Slot& s = bar_slot[b & 3];
	if (s.gen == b && s.count + exited == nthreads) {
		bar_done = b;
		return true;
	}
	return false;
}

std::string describe_waits() {
	std::string s;
	int shown = 0;
	for (int i = 0; i < nthreads; i++) {
		Fiber& f = fibers[i];
		if (f.wait == kDone || shown++ >= 8) continue;
		char b[160];
		if (f.wait == kBarrier)
			snprintf(b, sizeof b, "; thread %d waits at __syncthreads #%lld (line %d)", i, f.bars, f.line);
		else if (f.wait == kShuffle)
			snprintf(b, sizeof b, "; thread %d waits at shuffle #%lld (line %d)", i, f.shfs - 1, f.line);
		else
			snprintf(b, sizeof b, "; thread %d running", i);
		s += b;
	}
	char b[120];
	snprintf(b, sizeof b, "; %d of %d threads exited (block %u,%u,%u)", exited, nthreads, blockIdx.x, blockIdx.y, blockIdx.z);
	return s + b;
}

// shuffle_ready says whether all 32 lanes of f's warp have entered f's
// current shuffle; a lane that exited before it makes the run fail.
bool shuffle_ready(const Fiber& f) {
	long long s = f.shfs - 1;
	const Warp& w = warps[f.linear / 32];
	const Slot& sl = w.slot[s & 3];
	if (sl.gen == s && sl.count == 32) return true;
	if (w.exited > 0)
		for (int l = 0; l < 32; l++) {
			const Fiber& g = fibers[f.linear / 32 * 32 + l];
			if (g.wait == kDone && g.shfs <= s) {
				char m[200];
				snprintf(m, sizeof m, "shuffle #%lld (line %d) of thread %d waits for lane %d of its warp, which has exited", s, f.line,
					f.linear, l);
				fail(m + describe_waits());
			}
		}
	return false;
}

bool ready(const Fiber& f) {
	switch (f.wait) {
	case kBarrier:
		return barrier_ready(f.bars);
	case kShuffle:
		return shuffle_ready(f);
	case kDone:
		return false;
	default:
		return true;
	}
}

// wait gives the CPU to the scheduler until cur can go on; the scheduler
// resumes a fiber only when ready says so.
void wait() {
	if (ready(*cur)) {
		cur->wait = kRunning;
		return;
	}
	cudacpu_switch(&cur->sp, sched_sp);
	asm volatile("" ::: "memory");  // other fibers wrote shared memory and the warp's values
	cur->wait = kRunning;
}

}  // namespace

extern "C" void cudacpu_fiber_main() {
	kernel_run();
	Fiber* f = cur;
	f->wait = kDone;
	exited++;
	warps[f->linear / 32].exited++;
	cudacpu_switch(&f->sp, sched_sp);
	fail("a finished fiber was resumed");
}

void cudacpu_syncthreads(int line, const char*) {
	Fiber* f = cur;
	long long b = ++f->bars;
	Slot& s = enter(bar_slot, b, line);
	if (s.line != line) {
		char m[200];
		snprintf(m, sizeof m, "__syncthreads #%lld: thread %d waits at line %d, another thread at line %d (divergent barrier)", b,
			f->linear, line, s.line);
		fail(m);
	}
	f->wait = kBarrier;
	f->line = line;
	wait();
}

unsigned long long cudacpu_shfl(unsigned mask, unsigned long long bits, int src, int xor_mask, int width, int line) {
	Fiber* f = cur;
	if (mask != FULL_MASK_CUDACPU) fail("shuffle with a partial mask: not modelled");
	if (width != 32) fail("shuffle with width != 32: not modelled");
	int w = f->linear / 32, lane = f->linear % 32;
	if ((w + 1) * 32 > nthreads) fail("shuffle in a partial warp (block size not a multiple of 32)");
	long long s = f->shfs++;
	warps[w].val[s & 1][lane] = bits;
	enter(warps[w].slot, s, line);
	f->wait = kShuffle;
	f->line = line;
	wait();
	int from = src >= 0 ? (src & 31) : (lane ^ xor_mask) & 31;
	return warps[w].val[s & 1][from];
}

namespace {

struct Rng {
	uint64_t s;
	uint64_t next() {  // splitmix64
		uint64_t z = (s += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		return z ^ (z >> 31);
	}
	int below(int n) { return (int)(next() % (uint64_t)n); }
};

void start_fiber(Fiber& f) {
	if (!f.stack) {
		void* p = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) fail("mmap of a fiber stack failed");
		mprotect(p, 4096, PROT_NONE);  // overflow faults instead of corrupting
		f.stack = (char*)p;
	}
	uintptr_t top = ((uintptr_t)(f.stack + kStack)) & ~(uintptr_t)15;
	void** sp = (void**)top;
	*--sp = nullptr;                          // alignment slot
	*--sp = (void*)&cudacpu_fiber_start;      // "return address" of the first switch
	for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp rbx r12-r15
	f.sp = sp;
	f.wait = kRunning;
	f.bars = f.shfs = 0;
}

void run_block(int mode, Rng& rng) {
	if (__start_cudacpu_shared && __stop_cudacpu_shared)
		memset(__start_cudacpu_shared, 0xff, (size_t)(__stop_cudacpu_shared - __start_cudacpu_shared));
	for (Slot& sl : bar_slot) sl.gen = -1;
	for (Warp& w : warps) {
		for (Slot& sl : w.slot) sl.gen = -1;
		w.exited = 0;
	}
	bar_done = 0;
	exited = 0;
	for (int i = 0; i < nthreads; i++) {
		Fiber& f = fibers[i];
		f.linear = i;
		f.tid.x = i % blockDim.x;
		f.tid.y = i / blockDim.x % blockDim.y;
		f.tid.z = i / (blockDim.x * blockDim.y);
		start_fiber(f);
	}
	std::vector<int> order(nthreads);
	int nw = (nthreads + 31) / 32;
	int lead = mode == 1 ? rng.below(nw) : 0;
	for (;;) {
		if (mode == 1) {  // the leading warp first, in lane order; the rest shuffled
			int k = 0;
			for (int i = 0; i < nthreads; i++)
				if (i / 32 == lead) order[k++] = i;
			int first = k;
			for (int i = 0; i < nthreads; i++)
				if (i / 32 != lead) order[k++] = i;
			for (int i = nthreads - 1; i > first; i--) std::swap(order[i], order[first + rng.below(i - first + 1)]);
		} else {
			for (int i = 0; i < nthreads; i++) order[i] = i;
		}
		bool any = false, live = false;
		auto resume = [&](int i) {
			Fiber& f = fibers[i];
			if (f.wait == kDone) return false;
			live = true;
			if (!ready(f)) return false;
			any = true;
			cur = &f;
			threadIdx = f.tid;
			cudacpu_switch(&sched_sp, f.sp);
			return true;
		};
		if (mode == 1) {  // the leading warp runs as far as it can before any other thread
			for (bool moved = true; moved;) {
				moved = false;
				for (int l = 0; l < 32 && lead * 32 + l < nthreads; l++) moved |= resume(lead * 32 + l);
			}
		}
		for (int i : order) resume(i);
		if (!live) return;
		if (!any) fail("deadlock: no thread can continue" + describe_waits());
	}
}

// ---- protocol ----

FILE* in;
FILE* out;

void readn(void* p, size_t n) {
	if (n && fread(p, 1, n, in) != n) {
		fprintf(stderr, "cudacpu: short request\n");
		exit(2);
	}
}
template <class T>
T rd() {
	T v;
	readn(&v, sizeof v);
	return v;
}

[[noreturn]] void fail(const std::string& msg) {
	uint32_t st = 1, n = (uint32_t)msg.size();
	fwrite(&st, 4, 1, out);
	fwrite(&n, 4, 1, out);
	fwrite(msg.data(), 1, n, out);
	fflush(out);
	_Exit(0);
}

constexpr size_t kGuard = 64;
constexpr unsigned char kGuardByte = 0xff;  // NaN as float, bf16 and fp16: a read there shows

struct Arg {
	char kind;
	uint64_t bits;
	void* ptr;
};
std::vector<Arg> args;
const char* kname;

template <class T>
T get(int i) {
	const Arg& a = args[i];
	if constexpr (std::is_pointer_v<T>) {
		return (T)a.ptr;
	} else if constexpr (std::is_same_v<T, int>) {
		return (int)(int32_t)(uint32_t)a.bits;
	} else if constexpr (std::is_same_v<T, long long>) {
		return (long long)a.bits;
	} else {
		static_assert(std::is_same_v<T, float>, "kernel parameter of a type the protocol does not carry");
		return cudacpu_from_bits<float>(a.bits);
	}
}

template <class T>
char kind_of() {
	if constexpr (std::is_pointer_v<T>) return 'p';
	if constexpr (std::is_same_v<T, int>) return 'i';
	if constexpr (std::is_same_v<T, long long>) return 'l';
	return 'f';
}

template <auto F>
struct Entry;
template <class... A, void (*F)(A...)>
struct Entry<F> {
	static std::string check() {
		const char kinds[] = {kind_of<A>()..., 0};
		std::string want(kinds, sizeof...(A)), got;
		for (auto& a : args) got += a.kind;
		if (want != got) return std::string(kname) + ": arguments of kinds " + got + ", the kernel takes " + want;
		return "";
	}
	template <size_t... I>
	static void call(std::index_sequence<I...>) {
		F(get<A>(I)...);
	}
	static void run() { call(std::index_sequence_for<A...>{}); }
};

struct Kernel {
	const char* name;
	std::string (*check)();
	void (*run)();
};

#define CUDACPU_KERNEL(f) {#f, &Entry<f>::check, &Entry<f>::run},
const Kernel kernel_table[] = {
#include "dispatch.inc"
};

}  // namespace

int main() {
	in = stdin;
	out = stdout;
	uint32_t nl = rd<uint32_t>();
	std::string name(nl, '\0');
	readn(&name[0], nl);
	kname = name.c_str();
	uint32_t g[3], b[3];
	readn(g, sizeof g);
	readn(b, sizeof b);
	uint32_t mode = rd<uint32_t>();
	uint64_t seed = rd<uint64_t>();
	uint32_t nb = rd<uint32_t>();
	std::vector<unsigned char*> bufs(nb);
	std::vector<uint64_t> sizes(nb);
	for (uint32_t i = 0; i < nb; i++) {
		sizes[i] = rd<uint64_t>();
		unsigned char* p = (unsigned char*)malloc(sizes[i] + 2 * kGuard);
		memset(p, kGuardByte, sizes[i] + 2 * kGuard);
		readn(p + kGuard, sizes[i]);
		bufs[i] = p;
	}
	uint32_t na = rd<uint32_t>();
	for (uint32_t i = 0; i < na; i++) {
		Arg a{};
		a.kind = (char)rd<uint8_t>();
		switch (a.kind) {
		case 'p': {
			uint32_t k = rd<uint32_t>();
			if (k >= nb) fail("argument refers to a missing buffer");
			a.ptr = bufs[k] + kGuard;
			break;
		}
		case 'i':
		case 'f':
			a.bits = rd<uint32_t>();
			break;
		case 'l':
			a.bits = rd<uint64_t>();
			break;
		default:
			fail("unknown argument kind");
		}
		args.push_back(a);
	}
	const Kernel* k = nullptr;
	for (auto& e : kernel_table)
		if (name == e.name) k = &e;
	if (!k) fail("no kernel named " + name);
	std::string err = k->check();
	if (!err.empty()) fail(err);
	kernel_run = k->run;
	gridDim = {g[0], g[1], g[2]};
	blockDim = {b[0], b[1], b[2]};
	long long nt = (long long)b[0] * b[1] * b[2];
	if (nt < 1 || nt > kMaxThreads) fail("block size outside 1..1024");
	nthreads = (int)nt;
	Rng rng{seed};
	long long nblocks = (long long)g[0] * g[1] * g[2];
	std::vector<long long> border(nblocks);
	for (long long i = 0; i < nblocks; i++) border[i] = i;
	if (mode == 1)
		for (long long i = nblocks - 1; i > 0; i--) std::swap(border[i], border[(long long)(rng.next() % (uint64_t)(i + 1))]);
	for (long long bi : border) {
		blockIdx = {(unsigned)(bi % g[0]), (unsigned)(bi / g[0] % g[1]), (unsigned)(bi / ((long long)g[0] * g[1]))};
		run_block((int)mode, rng);
	}
	for (uint32_t i = 0; i < nb; i++)
		for (size_t j = 0; j < kGuard; j++)
			if (bufs[i][j] != kGuardByte || bufs[i][kGuard + sizes[i] + j] != kGuardByte) {
				char m[120];
				snprintf(m, sizeof m, "%s wrote outside buffer %u (%llu bytes)", kname, i, (unsigned long long)sizes[i]);
				fail(m);
			}
	uint32_t st = 0;
	fwrite(&st, 4, 1, out);
	for (uint32_t i = 0; i < nb; i++) fwrite(bufs[i] + kGuard, 1, sizes[i], out);
	fflush(out);
	return 0;
}
