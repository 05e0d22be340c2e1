// train.cu: the CUDA kernels of rella's LoRA training path (backward
// through the frozen base, LoRA dropout, chunked cross-entropy, AdamW).
//
// It is compiled as one program with llama.cu (cuda/kernels.go appends it
// after a #line directive), so it uses llama.cu's storage type "elem", its
// ld/st conversions, WARP, FULL, warp_sum, warp_max and the ATT_* macros,
// and, like llama.cu, includes no header.
//
// Conventions:
// - Gradients of the float residual stream and of the GEMM outputs that are
//   summed (the input of a norm gets three projections' gradients) are
//   float; gradients that feed a GEMM as an operand are elem (cuBLAS GemmEx
//   wants both operands of one type). All arithmetic is float, except AdamW
//   and the gradient-norm reduction, which use double like trainer.AdamW.
// - Kernels named *_bwd that take a float gradient output ADD into it (the
//   residual gradient accumulates); those writing elem outputs overwrite.
// - Each kernel has a CPU reference in cuda/train_ref.go.

// block_sum returns the sum of v over the block to every thread (blockDim a
// multiple of WARP, at most 1024). part is __shared__ float[WARP]; the call
// may be repeated with the same part.
__device__ __forceinline__ float block_sum(float v, float* part) {
	int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
	v = warp_sum(v);
	__syncthreads();  // a previous call may still be reading part
	if (lane == 0) part[wid] = v;
	__syncthreads();
	v = lane < (int)(blockDim.x / WARP) ? part[lane] : 0.f;
	return warp_sum(v);
}

// block_max is block_sum with max.
__device__ __forceinline__ float block_max(float v, float* part) {
	int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
	v = warp_max(v);
	__syncthreads();
	if (lane == 0) part[wid] = v;
	__syncthreads();
	v = lane < (int)(blockDim.x / WARP) ? part[lane] : __int_as_float(0xff800000);
	return warp_max(v);
}

// cast_elem: out = x rounded to the storage type, over n values (the float
// LoRA weights and residual gradients become GEMM operands).
extern "C" __global__ void cast_elem(elem* out, const float* x, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	out[i] = st(x[i]);
}

// rmsnorm_bwd ADDS to dx [n, d] the gradient of rmsnorm's input x [n, d]
// given dy, the gradient of its output, and the frozen weight w: with
// r = 1/sqrt(mean(x^2) + eps) and gw = dy * w,
// dx += r * gw - x * r^3 * sum(gw * x) / d. One block per row.
extern "C" __global__ void rmsnorm_bwd(float* dx, const float* dy, const float* x, const elem* w, int n, int d, float eps) {
	__shared__ float part[WARP];
	int r = blockIdx.x;
	if (r >= n) return;  // uniform over the block
	const float* xr = x + (long long)r * d;
	const float* gr = dy + (long long)r * d;
	float ss = 0.f, sd = 0.f;
	for (int c = threadIdx.x; c < d; c += blockDim.x) {
		float xv = xr[c];
		ss += xv * xv;
		sd += gr[c] * ld(w[c]) * xv;
	}
	ss = block_sum(ss, part);
	sd = block_sum(sd, part);
	float inv = rsqrtf(ss / (float)d + eps);
	float k = inv * inv * inv * sd / (float)d;
	for (int c = threadIdx.x; c < d; c += blockDim.x) dx[(long long)r * d + c] += inv * gr[c] * ld(w[c]) - xr[c] * k;
}

// rope_bwd applies the inverse of rope in place to the gradient x
// [n, heads*hd]: the rotation by -a, which is the transpose of rope's.
extern "C" __global__ void rope_bwd(elem* x, const int* pos, int n, int heads, int hd, float theta) {
	int half = hd / 2;
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)n * heads * half) return;
	int k = (int)(i % half);
	long long th = i / half;
	int t = (int)(th / heads);
	float inv_freq = 1.0f / powf(theta, (float)(2 * k) / (float)hd);
	float a = (float)pos[t] * inv_freq;
	float sn, cs;
	sincosf(a, &sn, &cs);
	elem* p = x + th * hd;
	float x1 = ld(p[k]), x2 = ld(p[k + half]);
	p[k] = st(x1 * cs + x2 * sn);
	p[k + half] = st(x2 * cs - x1 * sn);
}

// attention_fwd is llama.cu's attention that also writes, for each row and
// head, lse[row*H + h] = log sum_j exp(s_j) of the scaled scores s_j =
// scale * q.k_j, which the backward kernels use to recompute probabilities
// (p_j = exp(s_j - lse)) without storing them. Same grid and block.
extern "C" __global__ void __launch_bounds__(ATT_QT * WARP) attention_fwd(elem* o, float* lse, const elem* q, const elem* k,
	const elem* v, const int* cu, int H, int KV, int hd, float scale) {
	__shared__ float qs[ATT_QT][ATT_MAXD];
	__shared__ float ks[ATT_KT][ATT_MAXD + 1];
	__shared__ float vs[ATT_KT][ATT_MAXD];
	int b = blockIdx.y, h = blockIdx.z;
	int start = cu[b], len = cu[b + 1] - cu[b];
	int t0 = blockIdx.x * ATT_QT;
	if (t0 >= len) return;
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int t = t0 + warp;
	bool active = t < len;
	int kvh = h / (H / KV);
	int qstride = H * hd, kstride = KV * hd;
	for (int c = lane; c < ATT_MAXD; c += WARP)
		qs[warp][c] = (active && c < hd) ? ld(q[(long long)(start + t) * qstride + h * hd + c]) * scale : 0.f;
	float acc[ATT_MAXD / WARP];
#pragma unroll
	for (int i = 0; i < ATT_MAXD / WARP; i++) acc[i] = 0.f;
	float m = __int_as_float(0xff800000), l = 0.f;
	int tend = min(t0 + ATT_QT, len);
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
		if (!active || j0 > t) continue;
		int j = j0 + lane;
		float s = __int_as_float(0xff800000);
		if (j <= t) {
			s = 0.f;
			for (int c = 0; c < hd; c++) s += qs[warp][c] * ks[lane][c];
		}
		float mnew = fmaxf(m, warp_max(s));
		float corr = expf(m - mnew);
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
	if (lane == 0) lse[(long long)(start + t) * H + h] = m + logf(l);
}

// attention_bwd_pre: dd[row*H + h] = sum_c dout[row, h, c] * o[row, h, c]
// (FlashAttention-2's D = rowsum(dO * O), which equals sum_j p_j dp_j).
// One warp per (row, head); n rows.
extern "C" __global__ void attention_bwd_pre(float* dd, const elem* o, const elem* dout, int n, int H, int hd) {
	long long gw = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
	int lane = threadIdx.x % WARP;
	if (gw >= (long long)n * H) return;  // uniform over the warp
	const elem* a = o + gw * hd;
	const elem* g = dout + gw * hd;
	float s = 0.f;
	for (int c = lane; c < hd; c += WARP) s += ld(a[c]) * ld(g[c]);
	s = warp_sum(s);
	if (lane == 0) dd[gw] = s;
}

// attention_bwd_dq writes dq [N, H*hd], the gradient of the queries, given
// the forward's q, k, v, its lse, dd from attention_bwd_pre and dout, the
// gradient of the output: for query row t of head h,
// dq_t = scale * sum_{j<=t} p_j (dp_j - dd_t) k_j with p_j = exp(s_j - lse_t)
// and dp_j = dout_t . v_j. Grid and block as attention (one warp per query
// row, key tiles of ATT_KT lanes in shared memory).
extern "C" __global__ void __launch_bounds__(ATT_QT * WARP) attention_bwd_dq(elem* dq, const elem* q, const elem* k, const elem* v,
	const elem* dout, const float* lse, const float* dd, const int* cu, int H, int KV, int hd, float scale) {
	__shared__ float qs[ATT_QT][ATT_MAXD];
	__shared__ float gs[ATT_QT][ATT_MAXD];
	__shared__ float ks[ATT_KT][ATT_MAXD + 1];
	__shared__ float vs[ATT_KT][ATT_MAXD + 1];
	int b = blockIdx.y, h = blockIdx.z;
	int start = cu[b], len = cu[b + 1] - cu[b];
	int t0 = blockIdx.x * ATT_QT;
	if (t0 >= len) return;  // uniform over the block
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int t = t0 + warp;
	bool active = t < len;
	int kvh = h / (H / KV);
	int qstride = H * hd, kstride = KV * hd;
	long long qrow = (long long)(start + t) * qstride + h * hd;
	for (int c = lane; c < ATT_MAXD; c += WARP) {
		bool in = active && c < hd;
		qs[warp][c] = in ? ld(q[qrow + c]) * scale : 0.f;
		gs[warp][c] = in ? ld(dout[qrow + c]) : 0.f;
	}
	float lt = active ? lse[(long long)(start + t) * H + h] : 0.f;
	float dt = active ? dd[(long long)(start + t) * H + h] : 0.f;
	float acc[ATT_MAXD / WARP];
#pragma unroll
	for (int i = 0; i < ATT_MAXD / WARP; i++) acc[i] = 0.f;
	int tend = min(t0 + ATT_QT, len);
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
		float ds = 0.f;
		if (j <= t) {
			float s = 0.f, dp = 0.f;
			for (int c = 0; c < hd; c++) {
				s += qs[warp][c] * ks[lane][c];
				dp += gs[warp][c] * vs[lane][c];
			}
			ds = expf(s - lt) * (dp - dt);
		}
		int nk = min(ATT_KT, t - j0 + 1);
		for (int jj = 0; jj < nk; jj++) {
			float dj = __shfl_sync(FULL, ds, jj);
#pragma unroll
			for (int i = 0; i < ATT_MAXD / WARP; i++) {
				int c = lane + i * WARP;
				if (c < hd) acc[i] += dj * ks[jj][c];
			}
		}
	}
	if (!active) return;
#pragma unroll
	for (int i = 0; i < ATT_MAXD / WARP; i++) {
		int c = lane + i * WARP;
		if (c < hd) dq[qrow + c] = st(acc[i] * scale);
	}
}

// attention_bwd_dkv writes dk and dv [N, KV*hd], the gradients of the keys
// and values, summed over the H/KV query heads that share each kv head: for
// key row j, dv_j = sum_h sum_{t>=j} p_tj dout_t and
// dk_j = scale * sum_h sum_{t>=j} p_tj (dp_tj - dd_t) q_t. No atomics: each
// warp owns one key row and loops over the query heads of its group and the
// query rows at or after it, in tiles of WARP rows (one per lane) staged in
// shared memory. Grid: (ceil(maxLen/ATT_QT), B, KV); block: ATT_QT warps.
extern "C" __global__ void __launch_bounds__(ATT_QT * WARP) attention_bwd_dkv(elem* dk, elem* dv, const elem* q, const elem* k,
	const elem* v, const elem* dout, const float* lse, const float* dd, const int* cu, int H, int KV, int hd, float scale) {
	__shared__ float qs[WARP][ATT_MAXD + 1];
	__shared__ float gs[WARP][ATT_MAXD + 1];
	__shared__ float ks[ATT_QT][ATT_MAXD];
	__shared__ float vs[ATT_QT][ATT_MAXD];
	__shared__ float ls[WARP], ds_[WARP];
	int b = blockIdx.y, kvh = blockIdx.z;
	int start = cu[b], len = cu[b + 1] - cu[b];
	int j0 = blockIdx.x * ATT_QT;  // this block's first key row
	if (j0 >= len) return;         // uniform over the block
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int j = j0 + warp;  // this warp's key row
	bool active = j < len;
	int group = H / KV;
	int qstride = H * hd, kstride = KV * hd;
	long long krow = (long long)(start + j) * kstride + kvh * hd;
	for (int c = lane; c < ATT_MAXD; c += WARP) {
		bool in = active && c < hd;
		ks[warp][c] = in ? ld(k[krow + c]) : 0.f;
		vs[warp][c] = in ? ld(v[krow + c]) : 0.f;
	}
	float ak[ATT_MAXD / WARP], av[ATT_MAXD / WARP];
#pragma unroll
	for (int i = 0; i < ATT_MAXD / WARP; i++) ak[i] = av[i] = 0.f;
	for (int hh = 0; hh < group; hh++) {
		int h = kvh * group + hh;
		for (int t0 = j0; t0 < len; t0 += WARP) {
			__syncthreads();  // the previous tile is no longer read
			for (int e = threadIdx.x; e < WARP * hd; e += blockDim.x) {
				int tt = e / hd, c = e % hd;
				int t = t0 + tt;
				float qv = 0.f, gv = 0.f;
				if (t < len) {
					long long row = (long long)(start + t) * qstride + h * hd;
					qv = ld(q[row + c]) * scale;
					gv = ld(dout[row + c]);
				}
				qs[tt][c] = qv;
				gs[tt][c] = gv;
			}
			for (int tt = threadIdx.x; tt < WARP; tt += blockDim.x) {
				int t = t0 + tt;
				ls[tt] = t < len ? lse[(long long)(start + t) * H + h] : 0.f;
				ds_[tt] = t < len ? dd[(long long)(start + t) * H + h] : 0.f;
			}
			__syncthreads();
			if (!active) continue;  // uniform over the warp
			int t = t0 + lane;      // this lane's query row
			float p = 0.f, ds = 0.f;
			if (t >= j && t < len) {
				float s = 0.f, dp = 0.f;
				for (int c = 0; c < hd; c++) {
					s += qs[lane][c] * ks[warp][c];
					dp += gs[lane][c] * vs[warp][c];
				}
				p = expf(s - ls[lane]);
				ds = p * (dp - ds_[lane]);
			}
			for (int tt = 0; tt < WARP; tt++) {
				float pt = __shfl_sync(FULL, p, tt), dt = __shfl_sync(FULL, ds, tt);
#pragma unroll
				for (int i = 0; i < ATT_MAXD / WARP; i++) {
					int c = lane + i * WARP;
					if (c < hd) {
						av[i] += pt * gs[tt][c];
						ak[i] += dt * qs[tt][c];  // qs holds scale * q
					}
				}
			}
		}
	}
	if (!active) return;
#pragma unroll
	for (int i = 0; i < ATT_MAXD / WARP; i++) {
		int c = lane + i * WARP;
		if (c < hd) {
			dk[krow + c] = st(ak[i]);
			dv[krow + c] = st(av[i]);
		}
	}
}

// swiglu_bwd: with y = silu(g) * u, sig = 1/(1+exp(-g)) and dy its
// gradient: dg = dy * u * sig * (1 + g * (1 - sig)), du = dy * g * sig,
// elementwise over n values. dg may alias g and du may alias u.
extern "C" __global__ void swiglu_bwd(elem* dg, elem* du, const elem* g, const elem* u, const elem* dy, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float a = ld(g[i]), b = ld(u[i]), y = ld(dy[i]);
	float sig = 1.f / (1.f + expf(-a));
	dg[i] = st(y * b * sig * (1.f + a * (1.f - sig)));
	du[i] = st(y * a * sig);
}

// ---- LoRA dropout ----
//
// The masks reproduce cpu.DropoutMasks exactly: module i draws from Go's
// math/rand/v2 PCG seeded (seed, i+1), one draw per element of the packed
// [rows, in] input, in order; an element is kept when Float64() >= p, that
// is when the low 53 bits of Uint64() are >= ceil(p * 2^53) (Go's Float64
// is float64(u<<11>>11) / 2^53). PCG is a 128-bit LCG
// (state = state * MUL + INC) with a DXSM output; a thread jumps to its
// first draw in O(log n) (Brown's LCG jump-ahead) and then steps.

struct u128 {
	unsigned long long hi, lo;
};

__device__ __forceinline__ u128 mul128(u128 a, u128 b) {
	u128 r;
	r.lo = a.lo * b.lo;
	r.hi = __umul64hi(a.lo, b.lo) + a.hi * b.lo + a.lo * b.hi;
	return r;
}

__device__ __forceinline__ u128 add128(u128 a, u128 b) {
	u128 r;
	r.lo = a.lo + b.lo;
	r.hi = a.hi + b.hi + (r.lo < a.lo ? 1ull : 0ull);
	return r;
}

__device__ __forceinline__ u128 pcg_mul() {
	u128 m = {2549297995355413924ull, 4865540595714422341ull};
	return m;
}

__device__ __forceinline__ u128 pcg_inc() {
	u128 c = {6364136223846793005ull, 1442695040888963407ull};
	return c;
}

// pcg_advance returns the state k steps after s.
__device__ u128 pcg_advance(u128 s, unsigned long long k) {
	u128 am = {0ull, 1ull}, ap = {0ull, 0ull};  // accumulated: s -> am*s + ap
	u128 cm = pcg_mul(), cp = pcg_inc();        // 2^i steps: s -> cm*s + cp
	u128 one = {0ull, 1ull};
	while (k) {
		if (k & 1ull) {
			am = mul128(am, cm);
			ap = add128(mul128(ap, cm), cp);
		}
		cp = mul128(add128(cm, one), cp);
		cm = mul128(cm, cm);
		k >>= 1;
	}
	return add128(mul128(am, s), ap);
}

// pcg_output is the DXSM output of Go's PCG for the (already advanced) state.
__device__ __forceinline__ unsigned long long pcg_output(u128 s) {
	unsigned long long hi = s.hi;
	hi ^= hi >> 32;
	hi *= 0xda942042e4dd58b5ull;
	hi ^= hi >> 48;
	hi *= (s.lo | 1ull);
	return hi;
}

#define DROP_RUN 64

// dropout_mask writes keep[e] = 1 or 0 for e < n: draw number first+e of
// PCG(seed, stream) (Go's rand.NewPCG(seed, stream), draws counted from 0)
// is kept when its low 53 bits are >= thr = ceil(p * 2^53). Each thread
// makes DROP_RUN consecutive draws.
extern "C" __global__ void dropout_mask(unsigned char* keep, long long seed, long long stream, long long first, long long n,
	long long thr) {
	long long e0 = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * DROP_RUN;
	if (e0 >= n) return;
	u128 s = {(unsigned long long)seed, (unsigned long long)stream};
	s = pcg_advance(s, (unsigned long long)(first + e0));
	long long e1 = min(e0 + (long long)DROP_RUN, n);
	u128 mul = pcg_mul(), inc = pcg_inc();
	for (long long e = e0; e < e1; e++) {
		s = add128(mul128(s, mul), inc);  // Go's PCG steps, then outputs
		keep[e] = (pcg_output(s) & 0x1fffffffffffffull) >= (unsigned long long)thr ? 1 : 0;
	}
}

// dropout_apply: out = x * ks where keep, else 0 (ks = 1/(1-p), inverted
// dropout), over n values. out may alias x.
extern "C" __global__ void dropout_apply(elem* out, const elem* x, const unsigned char* keep, long long n, float ks) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	out[i] = keep[i] ? st(ld(x[i]) * ks) : st(0.f);
}

// mask_mul_add: dx += g * ks where keep (the gradient through dropout into
// the module input's gradient), over n values.
extern "C" __global__ void mask_mul_add(float* dx, const float* g, const unsigned char* keep, long long n, float ks) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	if (keep[i]) dx[i] += g[i] * ks;
}

// ---- rows ----

// gather_rows: out[r, :] = x[idx[r], :] for r < R (the labelled rows).
extern "C" __global__ void gather_rows(float* out, const float* x, const int* idx, int R, int d) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)R * d) return;
	int r = (int)(i / d), c = (int)(i % d);
	out[i] = x[(long long)idx[r] * d + c];
}

// scatter_add_rows: dx[idx[r], :] += g[r, :] for r < R (idx distinct).
extern "C" __global__ void scatter_add_rows(float* dx, const float* g, const int* idx, int R, int d) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)R * d) return;
	int r = (int)(i / d), c = (int)(i % d);
	dx[(long long)idx[r] * d + c] += g[i];
}

// ---- cross-entropy over vocabulary chunks ----
//
// The logits exist only for the R labelled rows and one chunk of Vc
// vocabulary rows at a time (z = h W[v0:v0+Vc]^T, a GEMM): ce_stats folds
// each chunk into a running max m and sum s per row (online logsumexp) and
// picks the label's logit when it falls in the chunk; ce_finish gives
// lse = m + log s and loss = lse - z_label; the backward pass recomputes
// each chunk's logits and ce_grad writes their gradient.

// ce_stats folds chunk [v0, v0+Vc) of the logits z [R, Vc] into m, s
// (initialised when v0 == 0) and sets zlab[r] when labels[r] is in the
// chunk. One block per row.
extern "C" __global__ void ce_stats(float* m, float* s, float* zlab, const float* z, const int* labels, int R, int Vc, int v0) {
	__shared__ float part[WARP];
	int r = blockIdx.x;
	if (r >= R) return;  // uniform over the block
	const float* zr = z + (long long)r * Vc;
	float mx = __int_as_float(0xff800000);
	for (int c = threadIdx.x; c < Vc; c += blockDim.x) mx = fmaxf(mx, zr[c]);
	mx = block_max(mx, part);
	float sum = 0.f;
	for (int c = threadIdx.x; c < Vc; c += blockDim.x) sum += expf(zr[c] - mx);
	sum = block_sum(sum, part);
	if (threadIdx.x == 0) {
		float m0 = v0 == 0 ? __int_as_float(0xff800000) : m[r];
		float s0 = v0 == 0 ? 0.f : s[r];
		float mn = fmaxf(m0, mx);
		s[r] = s0 * expf(m0 - mn) + sum * expf(mx - mn);
		m[r] = mn;
		int lab = labels[r];
		if (lab >= v0 && lab < v0 + Vc) zlab[r] = zr[lab - v0];
	}
}

// ce_finish: lse[r] = m[r] + log(s[r]), loss[r] = lse[r] - zlab[r].
extern "C" __global__ void ce_finish(float* lse, float* loss, const float* m, const float* s, const float* zlab, int R) {
	int r = blockIdx.x * blockDim.x + threadIdx.x;
	if (r >= R) return;
	float l = m[r] + logf(s[r]);
	lse[r] = l;
	loss[r] = l - zlab[r];
}

// ce_grad writes dz [R, Vc], the gradient of scale * sum_r loss[r] with
// respect to chunk [v0, v0+Vc) of the logits z: scale * (softmax - onehot).
extern "C" __global__ void ce_grad(elem* dz, const float* z, const float* lse, const int* labels, int R, int Vc, int v0, float scale) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)R * Vc) return;
	int r = (int)(i / Vc), c = (int)(i % Vc);
	float p = expf(z[i] - lse[r]);
	if (labels[r] == v0 + c) p -= 1.f;
	dz[i] = st(p * scale);
}

// ---- optimiser ----
//
// trainer.AdamW computes in float64 and stores float32; so do these, with
// the float64 operations written as unfused intrinsics in the order of the
// Go code (Go does not fuse multiply-add on amd64 by default; NVRTC would),
// so the results match bit for bit. float64 scalars travel as their bits in
// long long arguments (the launcher passes only int, long long and float).

__device__ __forceinline__ double bits_double(long long b) { return __longlong_as_double(b); }

// adamw updates n parameters p with moments m, v from gradients g:
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g g;
// p = p * decay - step * m / (sqrt(v) / bc2 + eps), with decay = 1 - lr wd,
// step = lr / (1 - b1^t), bc2 = sqrt(1 - b2^t) computed by the caller.
extern "C" __global__ void adamw(float* p, float* m, float* v, const float* g, long long n, long long beta1, long long beta2,
	long long eps, long long decay, long long step, long long bc2) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	double b1 = bits_double(beta1), b2 = bits_double(beta2);
	double gg = (double)g[i];
	double mj = __dadd_rn(__dmul_rn(b1, (double)m[i]), __dmul_rn(__dsub_rn(1.0, b1), gg));
	double vj = __dadd_rn(__dmul_rn(b2, (double)v[i]), __dmul_rn(__dmul_rn(__dsub_rn(1.0, b2), gg), gg));
	m[i] = __double2float_rn(mj);
	v[i] = __double2float_rn(vj);
	double w = __dmul_rn((double)p[i], bits_double(decay));
	double den = __dadd_rn(__ddiv_rn(__dsqrt_rn(vj), bits_double(bc2)), bits_double(eps));
	w = __dsub_rn(w, __ddiv_rn(__dmul_rn(bits_double(step), mj), den));
	p[i] = __double2float_rn(w);
}

// scale_f32: g = float(double(g) * c) over n values (trainer's scaleGrads:
// the 1/tokens normalisation and the clipping factor).
extern "C" __global__ void scale_f32(float* g, long long n, long long c) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	g[i] = __double2float_rn(__dmul_rn((double)g[i], bits_double(c)));
}

__device__ __forceinline__ double warp_sum_d(double v) {
	for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
	return v;
}

// sumsq_partial: part[blockIdx.x] = sum of g[i]^2 in double over the
// elements i = blockIdx.x*blockDim.x + threadIdx.x + k*gridDim.x*blockDim.x.
// With sum_partials, a deterministic global gradient norm (for a fixed grid).
extern "C" __global__ void sumsq_partial(double* part, const float* g, long long n) {
	__shared__ double ws[WARP];
	double s = 0.0;
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
		double x = (double)g[i];
		s += x * x;
	}
	int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
	s = warp_sum_d(s);
	if (lane == 0) ws[wid] = s;
	__syncthreads();
	if (wid == 0) {
		s = lane < (int)(blockDim.x / WARP) ? ws[lane] : 0.0;
		s = warp_sum_d(s);
		if (lane == 0) part[blockIdx.x] = s;
	}
}

// sum_partials: out[0] = sum of part[0..n) (one block).
extern "C" __global__ void sum_partials(double* out, const double* part, int n) {
	__shared__ double ws[WARP];
	double s = 0.0;
	for (int i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
	int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
	s = warp_sum_d(s);
	if (lane == 0) ws[wid] = s;
	__syncthreads();
	if (wid == 0) {
		s = lane < (int)(blockDim.x / WARP) ? ws[lane] : 0.0;
		s = warp_sum_d(s);
		if (lane == 0) out[0] = s;
	}
}

// ---- int8 weight-only base weights (model.quantize: int8) ----

// dequant_int8: out[r, c] = st(float(q[r, c]) * scale[r]) over a [rows, cols]
// weight quantised per output row (model.QuantizeInt8: absmax / 127), the
// frozen projection's GEMM operand in the storage type. The engine writes
// it into one buffer that every projection reuses, just before its GEMM.
// The product is one float multiplication, as model.Int8.Dequantize does
// on the CPU. Reference: DequantInt8Ref.
extern "C" __global__ void dequant_int8(elem* out, const signed char* q, const float* scale, int rows, int cols) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (long long)rows * cols) return;
	out[i] = st(__fmul_rn((float)q[i], scale[i / cols]));
}
