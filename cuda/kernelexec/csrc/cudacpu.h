// cudacpu.h: just enough of CUDA's execution model, in plain C++ for one CPU
// thread, to run rella's kernel source (cuda/kernels/*.cu) unchanged.
//
// Every CUDA thread of a block is a fiber with its own stack (a hand-written
// x86-64 context switch: no signal masks, about 10 ns). Blocks run one after
// the other; within a block a scheduler resumes the fibers in a given order
// until each has finished. A fiber gives up the CPU only where CUDA threads
// synchronise:
//   __syncthreads   a counting barrier over the block's threads that have not
//                   exited (as on Volta and later); all must reach the same
//                   __syncthreads (source line), or the run aborts;
//   __shfl_sync,    exchange among the 32 lanes of the caller's own warp; a
//   __shfl_xor_sync lane waits until all 32 have entered the same (n-th)
//                   shuffle, and one that has exited makes the run abort.
// A pass of the scheduler in which no fiber makes progress is a deadlock:
// the run aborts with a message naming what each thread waits for.
//
// __shared__ variables are static storage in one section, filled with 0xff
// bytes (NaN as float or double) before each block, so that a read of shared
// memory nobody wrote shows up as NaN in the output.
//
// Schedules (the request's mode): 0 resumes the fibers in thread order, one
// step each per pass (a step ends at the next wait), and runs the blocks in
// grid order; 1 (skewed, seeded) runs the blocks in a random order and, in
// every pass, first lets one warp chosen per block run as far as it can
// (through its shuffles, up to a barrier) and then resumes the other threads
// in a fresh random order, so that missing barriers that thread order hides
// become visible.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <string>

// ---- language ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("cudacpu_shared")))

struct uint3 {
	unsigned int x, y, z;
};
typedef uint3 dim3;

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

// ---- intrinsics (IEEE C++ equivalents; compile with -ffp-contract=off) ----
static inline float __int_as_float(int i) {
	float f;
	memcpy(&f, &i, 4);
	return f;
}
static inline float __uint_as_float(unsigned int i) {
	float f;
	memcpy(&f, &i, 4);
	return f;
}
static inline unsigned int __float_as_uint(float f) {
	unsigned int i;
	memcpy(&i, &f, 4);
	return i;
}
static inline int __float_as_int(float f) {
	int i;
	memcpy(&i, &f, 4);
	return i;
}
static inline double __longlong_as_double(long long b) {
	double d;
	memcpy(&d, &b, 8);
	return d;
}
static inline long long __double_as_longlong(double d) {
	long long b;
	memcpy(&b, &d, 8);
	return b;
}
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
	return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }
static inline float __double2float_rn(double a) { return (float)a; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }

// ---- synchronisation (cudacpu.cpp) ----
#define FULL_MASK_CUDACPU 0xffffffffu
void cudacpu_syncthreads(int line, const char* file);
unsigned long long cudacpu_shfl(unsigned mask, unsigned long long bits, int src, int xor_mask, int width, int line);
#define __syncthreads() cudacpu_syncthreads(__LINE__, __FILE__)

template <class T>
static inline T cudacpu_from_bits(unsigned long long b) {
	T v;
	memcpy(&v, &b, sizeof(T));
	return v;
}
template <class T>
static inline unsigned long long cudacpu_to_bits(T v) {
	static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
	unsigned long long b = 0;
	memcpy(&b, &v, sizeof(T));
	return b;
}
template <class T>
static inline T cudacpu_shfl_sync(unsigned mask, T v, int src, int width, int line) {
	return cudacpu_from_bits<T>(cudacpu_shfl(mask, cudacpu_to_bits(v), src, -1, width, line));
}
template <class T>
static inline T cudacpu_shfl_xor_sync(unsigned mask, T v, int lm, int width, int line) {
	return cudacpu_from_bits<T>(cudacpu_shfl(mask, cudacpu_to_bits(v), -1, lm, width, line));
}
#define __shfl_sync(mask, v, src, ...) cudacpu_shfl_sync(mask, v, src, cudacpu_width(__VA_ARGS__ + 0), __LINE__)
#define __shfl_xor_sync(mask, v, lm, ...) cudacpu_shfl_xor_sync(mask, v, lm, cudacpu_width(__VA_ARGS__ + 0), __LINE__)
static inline int cudacpu_width(int w) { return w == 0 ? 32 : w; }
