// llama.cu: the CUDA kernels of rella's LLaMA inference path.
//
// Design choices:
// - Compiled at run time by NVRTC for the device's own architecture, so the
//   file includes no header at all (NVRTC finds none on a bare machine): the
//   half-precision conversions are written here with bit operations (no
//   PTX, so that cuda/kernelexec runs the same text on the CPU).
// - One source, three storage types, chosen with a macro: RELLA_F32 (float,
//   used by the tests at fp32 tolerance), RELLA_BF16 (sm_80+) and RELLA_F16
//   (sm_70). "elem" is the storage type of weights and activations that feed
//   the GEMMs; the residual stream stays in float. All arithmetic is float.
// - Tokens of several sequences are packed without padding: cu[b] .. cu[b+1]
//   are the rows of sequence b (cu has B+1 entries, cu[0] = 0). Attention is
//   causal within each sequence and never looks across sequences.
// - Every kernel is extern "C" so that the Go side finds it by plain name;
//   cuda/kernels.go lists the names and a test checks them against this file.
// - Each kernel has a CPU reference in cuda/ref.go; the tests compare them.

#if defined(RELLA_F32)
typedef float elem;
__device__ __forceinline__ float ld(elem x) { return x; }
__device__ __forceinline__ elem st(float x) { return x; }
#elif defined(RELLA_F16)
// IEEE half with bit operations, as bf16 below (no PTX, so the same text also
// runs in the CPU harness, cuda/kernelexec): widening is exact; narrowing
// rounds to nearest, ties to even, overflow gives Inf, NaN stays NaN (quiet),
// small values become subnormal or zero, as cuda/convert.go's f16Bits.
typedef unsigned short elem;
__device__ __forceinline__ float ld(elem x) {
	unsigned int sign = ((unsigned int)x & 0x8000u) << 16;
	unsigned int ex = ((unsigned int)x >> 10) & 0x1fu, mant = (unsigned int)x & 0x3ffu;
	if (ex == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
	if (ex == 0u) return __uint_as_float(sign | __float_as_uint((float)mant * 5.9604644775390625e-8f));  // mant * 2^-24, exact
	return __uint_as_float(sign | ((ex + 112u) << 23) | (mant << 13));
}
__device__ __forceinline__ elem st(float f) {
	unsigned int u = __float_as_uint(f);
	unsigned int sign = (u >> 16) & 0x8000u, mant = u & 0x7fffffu;
	int ex = (int)((u >> 23) & 0xffu);
	if (ex == 0xff) return (elem)(sign | (mant != 0u ? 0x7e00u : 0x7c00u));
	int e = ex - 112;  // the exponent field of a half
	if (e >= 0x1f) return (elem)(sign | 0x7c00u);
	if (e <= 0) {  // subnormal half or zero
		if (e < -10) return (elem)sign;
		unsigned int m = mant | 0x800000u, shift = (unsigned int)(14 - e);
		unsigned int r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
		if (rem > half || (rem == half && (r & 1u) != 0u)) r++;
		return (elem)(sign | r);
	}
	unsigned int r = ((unsigned int)e << 10) | (mant >> 13), rem = mant & 0x1fffu;
	if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) != 0u)) r++;  // a carry into the exponent is right, up to Inf
	return (elem)(sign | r);
}
#else  // RELLA_BF16 (the default)
typedef unsigned short elem;
__device__ __forceinline__ float ld(elem x) { return __uint_as_float(((unsigned int)x) << 16); }
__device__ __forceinline__ elem st(float f) {
	unsigned int u = __float_as_uint(f);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0u) {
		return (elem)((u >> 16) | 0x0040u);  // NaN stays a (quiet) NaN
	}
	u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
	return (elem)(u >> 16);
}
#endif

#define WARP 32
#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
	for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
	return v;
}

// embed_gather: out[t, :] = table[ids[t], :] for t < n; out is float [n, d].
// An id outside [0, vocab) writes NaN (the Go side checks ids first).
extern "C" __global__ void embed_gather(float* out, const elem* table, const int* ids, int n, int d, int vocab) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)n * d) return;
	int t = (int)(i / d), c = (int)(i % d);
	int id = ids[t];
	out[i] = (id < 0 || id >= vocab) ? __int_as_float(0x7fc00000) : ld(table[(long long)id * d + c]);
}

// rmsnorm: out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, one block
// per row (blockDim a multiple of 32, at most 1024).
extern "C" __global__ void rmsnorm(elem* out, const float* x, const elem* w, int n, int d, float eps) {
	__shared__ float part[WARP];
	int r = blockIdx.x;
	if (r >= n) return;
	const float* xr = x + (long long)r * d;
	float s = 0.f;
	for (int c = threadIdx.x; c < d; c += blockDim.x) s += xr[c] * xr[c];
	s = warp_sum(s);
	int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
	if (lane == 0) part[wid] = s;
	__syncthreads();
	if (wid == 0) {
		int nw = blockDim.x / WARP;
		s = lane < nw ? part[lane] : 0.f;
		s = warp_sum(s);
		if (lane == 0) part[0] = s;
	}
	__syncthreads();
	float inv = rsqrtf(part[0] / (float)d + eps);
	for (int c = threadIdx.x; c < d; c += blockDim.x) out[(long long)r * d + c] = st(xr[c] * inv * ld(w[c]));
}

// rope applies HF LLaMA rotary embeddings (rotate-half convention) in place
// to x [n, heads*hd]: for i < hd/2, with a = pos[t] * theta^(-2i/hd),
// (x[i], x[i+hd/2]) <- (x[i] cos a - x[i+hd/2] sin a, x[i+hd/2] cos a + x[i] sin a).
extern "C" __global__ void rope(elem* x, const int* pos, int n, int heads, int hd, float theta) {
	int half = hd / 2;
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)n * heads * half) return;
	int k = (int)(i % half);
	long long th = i / half;  // token*heads + head
	int t = (int)(th / heads);
	float inv_freq = 1.0f / powf(theta, (float)(2 * k) / (float)hd);
	float a = (float)pos[t] * inv_freq;
	float sn, cs;
	sincosf(a, &sn, &cs);
	elem* p = x + th * hd;
	float x1 = ld(p[k]), x2 = ld(p[k + half]);
	p[k] = st(x1 * cs - x2 * sn);
	p[k + half] = st(x2 * cs + x1 * sn);
}

// attention: causal grouped-query attention over packed sequences, flash
// style: keys and values stream through shared memory in tiles of ATT_KT, and
// each warp keeps a running max, running sum and output accumulator for its
// query row (online softmax), so no score matrix is ever stored.
// q, o: [N, H*hd]; k, v: [N, KV*hd]; query head h reads kv head h/(H/KV).
// Grid: (ceil(maxLen/ATT_QT), B, H); block: ATT_QT warps; hd <= ATT_MAXD.
#define ATT_QT 8
#define ATT_KT 32
#define ATT_MAXD 128
extern "C" __global__ void __launch_bounds__(ATT_QT * WARP) attention(elem* o, const elem* q, const elem* k, const elem* v,
	const int* cu, int H, int KV, int hd, float scale) {
	__shared__ float qs[ATT_QT][ATT_MAXD];
	__shared__ float ks[ATT_KT][ATT_MAXD + 1];  // +1: lanes read different rows, no bank conflicts
	__shared__ float vs[ATT_KT][ATT_MAXD];
	int b = blockIdx.y, h = blockIdx.z;
	int start = cu[b], len = cu[b + 1] - cu[b];
	int t0 = blockIdx.x * ATT_QT;
	if (t0 >= len) return;  // uniform over the block
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int t = t0 + warp;  // this warp's query row within the sequence
	bool active = t < len;
	int kvh = h / (H / KV);
	int qstride = H * hd, kstride = KV * hd;
	for (int c = lane; c < ATT_MAXD; c += WARP)
		qs[warp][c] = (active && c < hd) ? ld(q[(long long)(start + t) * qstride + h * hd + c]) * scale : 0.f;
	float acc[ATT_MAXD / WARP];
#pragma unroll
	for (int i = 0; i < ATT_MAXD / WARP; i++) acc[i] = 0.f;
	float m = __int_as_float(0xff800000), l = 0.f;  // -inf
	int tend = min(t0 + ATT_QT, len);  // keys 0 .. tend-1 are needed by this block
	for (int j0 = 0; j0 < tend; j0 += ATT_KT) {
		__syncthreads();
		for (int e = threadIdx.x; e < ATT_KT * hd; e += blockDim.x) {
			int jj = e / hd, c = e % hd;
			int j = j0 + jj;
			float kv = 0.f, vv = 0.f;
			if (j < len) {
				long long row = (long long)(start + j);
				kv = ld(k[row * kstride + kvh * hd + c]);
				vv = ld(v[row * kstride + kvh * hd + c]);
			}
			ks[jj][c] = kv;
			vs[jj][c] = vv;
		}
		__syncthreads();
		if (!active || j0 > t) continue;  // uniform over the warp
		int j = j0 + lane;
		float s = __int_as_float(0xff800000);
		if (j <= t) {
			s = 0.f;
			for (int c = 0; c < hd; c++) s += qs[warp][c] * ks[lane][c];
		}
		float mnew = fmaxf(m, warp_max(s));  // finite: key j0 <= t is always present
		float corr = expf(m - mnew);         // 0 on the first tile (m = -inf)
		float p = (j <= t) ? expf(s - mnew) : 0.f;
		l = l * corr + warp_sum(p);
		int nk = min(ATT_KT, t - j0 + 1);
#pragma unroll
		for (int i = 0; i < ATT_MAXD / WARP; i++) acc[i] *= corr;
		for (int jj = 0; jj < nk; jj++) {
			float pj = __shfl_sync(FULL, p, jj);
#pragma unroll
			for (int i = 0; i < ATT_MAXD / WARP; i++) {
				int c = lane + i * WARP;
				if (c < hd) acc[i] += pj * vs[jj][c];
			}
		}
		m = mnew;
	}
	if (!active) return;
	float inv = 1.f / l;
#pragma unroll
	for (int i = 0; i < ATT_MAXD / WARP; i++) {
		int c = lane + i * WARP;
		if (c < hd) o[(long long)(start + t) * qstride + h * hd + c] = st(acc[i] * inv);
	}
}

// swiglu: out = silu(g) * u = g / (1 + exp(-g)) * u, elementwise over n values.
// out may alias g.
extern "C" __global__ void swiglu(elem* out, const elem* g, const elem* u, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float a = ld(g[i]);
	out[i] = st(a / (1.f + expf(-a)) * ld(u[i]));
}

// residual_add: x += y over n values (x is the float residual stream).
extern "C" __global__ void residual_add(float* x, const elem* y, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	x[i] += ld(y[i]);
}

// gather_last: out[b, :] = x[cu[b+1]-1, :], the last token of each sequence.
extern "C" __global__ void gather_last(float* out, const float* x, const int* cu, int B, int d) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)B * d) return;
	int b = (int)(i / d), c = (int)(i % d);
	out[i] = x[(long long)(cu[b + 1] - 1) * d + c];
}

// lm_head_rows: out[b, r] = dot(h[b, :], w[rows[r], :]) for the given
// vocabulary rows only; one warp per (b, r), float accumulation.
extern "C" __global__ void lm_head_rows(float* out, const elem* h, const elem* w, const int* rows, int B, int R, int d) {
	long long gw = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
	int lane = threadIdx.x % WARP;
	if (gw >= (long long)B * R) return;  // uniform over the warp
	int b = (int)(gw / R), r = (int)(gw % R);
	const elem* hb = h + (long long)b * d;
	const elem* wr = w + (long long)rows[r] * d;
	float s = 0.f;
	for (int c = lane; c < d; c += WARP) s += ld(hb[c]) * ld(wr[c]);
	s = warp_sum(s);
	if (lane == 0) out[gw] = s;
}

// mean_pool: out[b, :] = mean of h[cu[b] .. cu[b+1]-1, :] (padding never
// enters: sequences are packed). Grid: (ceil(d/blockDim), B).
extern "C" __global__ void mean_pool(float* out, const elem* h, const int* cu, int B, int d) {
	int b = blockIdx.y;
	int c = blockIdx.x * blockDim.x + threadIdx.x;
	if (b >= B || c >= d) return;
	int s0 = cu[b], s1 = cu[b + 1];
	float s = 0.f;
	for (int t = s0; t < s1; t++) s += ld(h[(long long)t * d + c]);
	out[(long long)b * d + c] = s1 > s0 ? s / (float)(s1 - s0) : __int_as_float(0x7fc00000);
}
