//go:build rellagpu

// shim.c: dlopen/dlsym loading of libcuda, libcublas and libnvrtc, and thin
// wrappers that call through the loaded pointers. See shim.h.

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shim.h"

#define CU_FNS(X) \
	X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName) \
	X(cuDeviceGetAttribute) X(cuDeviceTotalMem_v2) X(cuDevicePrimaryCtxRetain) \
	X(cuDevicePrimaryCtxRelease_v2) X(cuCtxSetCurrent) X(cuCtxSynchronize) X(cuMemGetInfo_v2) \
	X(cuMemAlloc_v2) X(cuMemFree_v2) X(cuMemcpyHtoDAsync_v2) X(cuMemcpyDtoHAsync_v2) \
	X(cuMemcpyDtoDAsync_v2) X(cuMemsetD16Async) X(cuMemsetD32Async) X(cuStreamCreate) \
	X(cuStreamDestroy_v2) X(cuStreamSynchronize) X(cuEventCreate) X(cuEventDestroy_v2) X(cuEventRecord) \
	X(cuEventSynchronize) X(cuEventElapsedTime) X(cuModuleLoadData) X(cuModuleUnload) \
	X(cuModuleGetFunction) X(cuLaunchKernel) X(cuGetErrorName) X(cuGetErrorString)

#define BLAS_FNS(X) \
	X(cublasCreate_v2) X(cublasDestroy_v2) X(cublasGetVersion_v2) X(cublasSetStream_v2) \
	X(cublasSetMathMode) X(cublasGemmEx) X(cublasGemmStridedBatchedEx)

#define NVRTC_FNS(X) \
	X(nvrtcVersion) X(nvrtcGetErrorString) X(nvrtcCreateProgram) X(nvrtcCompileProgram) \
	X(nvrtcGetProgramLogSize) X(nvrtcGetProgramLog) X(nvrtcGetPTXSize) X(nvrtcGetPTX) \
	X(nvrtcGetCUBINSize) X(nvrtcGetCUBIN) X(nvrtcDestroyProgram)

#define DECL(name) static __typeof__(name)* p_##name;
CU_FNS(DECL)
BLAS_FNS(DECL)
NVRTC_FNS(DECL)

// Optional NVRTC entry points (from CUDA 11.2): NULL when the library lacks them.
static __typeof__(nvrtcGetNumSupportedArchs)* p_nvrtcGetNumSupportedArchs;
static __typeof__(nvrtcGetSupportedArchs)* p_nvrtcGetSupportedArchs;

#define LOAD(name) \
	if ((p_##name = (__typeof__(name)*)dlsym(h, #name)) == NULL) { \
		snprintf(err, n, "%s: no symbol %s", path, #name); \
		return -1; \
	}

static void* open_lib(const char* path, char* err, int n) {
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char* e = dlerror();
		snprintf(err, n, "%s", e ? e : path);
	}
	return h;
}

int rella_open_cuda(const char* path, char* err, int n) {
	void* h = open_lib(path, err, n);
	if (h == NULL) return -1;
	CU_FNS(LOAD)
	return 0;
}

int rella_open_cublas(const char* path, char* err, int n) {
	void* h = open_lib(path, err, n);
	if (h == NULL) return -1;
	BLAS_FNS(LOAD)
	return 0;
}

int rella_open_nvrtc(const char* path, char* err, int n) {
	void* h = open_lib(path, err, n);
	if (h == NULL) return -1;
	NVRTC_FNS(LOAD)
	p_nvrtcGetNumSupportedArchs = (__typeof__(nvrtcGetNumSupportedArchs)*)dlsym(h, "nvrtcGetNumSupportedArchs");
	p_nvrtcGetSupportedArchs = (__typeof__(nvrtcGetSupportedArchs)*)dlsym(h, "nvrtcGetSupportedArchs");
	return 0;
}

#define CHECK(name) \
	if (dlsym(h, #name) == NULL) { \
		size_t l = strlen(err); \
		snprintf(err + l, (size_t)n > l ? (size_t)n - l : 0, " %s", #name); \
		missing++; \
	}

int rella_check_symbols(const char* path, int which, char* err, int n) {
	void* h = open_lib(path, err, n);
	int missing = 0;
	if (h == NULL) return -1;
	err[0] = 0;
	switch (which) {
	case 0: CU_FNS(CHECK) break;
	case 1: BLAS_FNS(CHECK) break;
	default: NVRTC_FNS(CHECK) break;
	}
	dlclose(h);
	return missing ? -1 : 0;
}

CUresult r_cuInit(unsigned int flags) { return p_cuInit(flags); }
CUresult r_cuDriverGetVersion(int* v) { return p_cuDriverGetVersion(v); }
CUresult r_cuDeviceGetCount(int* n) { return p_cuDeviceGetCount(n); }
CUresult r_cuDeviceGet(CUdevice* d, int ordinal) { return p_cuDeviceGet(d, ordinal); }
CUresult r_cuDeviceGetName(char* name, int len, CUdevice d) { return p_cuDeviceGetName(name, len, d); }
CUresult r_cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice d) { return p_cuDeviceGetAttribute(v, a, d); }
CUresult r_cuDeviceTotalMem(size_t* bytes, CUdevice d) { return p_cuDeviceTotalMem_v2(bytes, d); }
CUresult r_cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d) { return p_cuDevicePrimaryCtxRetain(c, d); }
CUresult r_cuDevicePrimaryCtxRelease(CUdevice d) { return p_cuDevicePrimaryCtxRelease_v2(d); }
CUresult r_cuCtxSetCurrent(CUcontext c) { return p_cuCtxSetCurrent(c); }
CUresult r_cuCtxSynchronize(void) { return p_cuCtxSynchronize(); }
CUresult r_cuMemGetInfo(size_t* free, size_t* total) { return p_cuMemGetInfo_v2(free, total); }
CUresult r_cuMemAlloc(CUdeviceptr* p, size_t bytes) { return p_cuMemAlloc_v2(p, bytes); }
CUresult r_cuMemFree(CUdeviceptr p) { return p_cuMemFree_v2(p); }
CUresult r_cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes, CUstream s) {
	return p_cuMemcpyHtoDAsync_v2(dst, src, bytes, s);
}
CUresult r_cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream s) {
	return p_cuMemcpyDtoHAsync_v2(dst, src, bytes, s);
}
CUresult r_cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s) {
	return p_cuMemcpyDtoDAsync_v2(dst, src, bytes, s);
}
CUresult r_cuMemsetD16Async(CUdeviceptr p, unsigned short v, size_t n, CUstream s) { return p_cuMemsetD16Async(p, v, n, s); }
CUresult r_cuMemsetD32Async(CUdeviceptr p, unsigned int v, size_t n, CUstream s) { return p_cuMemsetD32Async(p, v, n, s); }
CUresult r_cuStreamCreate(CUstream* s, unsigned int flags) { return p_cuStreamCreate(s, flags); }
CUresult r_cuStreamDestroy(CUstream s) { return p_cuStreamDestroy_v2(s); }
CUresult r_cuStreamSynchronize(CUstream s) { return p_cuStreamSynchronize(s); }
CUresult r_cuEventCreate(CUevent* e, unsigned int flags) { return p_cuEventCreate(e, flags); }
CUresult r_cuEventDestroy(CUevent e) { return p_cuEventDestroy_v2(e); }
CUresult r_cuEventRecord(CUevent e, CUstream s) { return p_cuEventRecord(e, s); }
CUresult r_cuEventSynchronize(CUevent e) { return p_cuEventSynchronize(e); }
CUresult r_cuEventElapsedTime(float* ms, CUevent a, CUevent b) { return p_cuEventElapsedTime(ms, a, b); }
CUresult r_cuModuleLoadData(CUmodule* m, const void* image) { return p_cuModuleLoadData(m, image); }
CUresult r_cuModuleUnload(CUmodule m) { return p_cuModuleUnload(m); }
CUresult r_cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) { return p_cuModuleGetFunction(f, m, name); }

CUresult r_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
	unsigned smem, CUstream s, uint64_t* vals, int n) {
	void* params[32];
	if (n > 32) return CUDA_ERROR_INVALID_VALUE;
	for (int i = 0; i < n; i++) params[i] = &vals[i];
	return p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, s, params, NULL);
}

const char* r_cuErrorName(CUresult r) {
	const char* s = NULL;
	if (p_cuGetErrorName == NULL || p_cuGetErrorName(r, &s) != CUDA_SUCCESS) return NULL;
	return s;
}

const char* r_cuErrorString(CUresult r) {
	const char* s = NULL;
	if (p_cuGetErrorString == NULL || p_cuGetErrorString(r, &s) != CUDA_SUCCESS) return NULL;
	return s;
}

cublasStatus_t r_cublasCreate(cublasHandle_t* h) { return p_cublasCreate_v2(h); }
cublasStatus_t r_cublasDestroy(cublasHandle_t h) { return p_cublasDestroy_v2(h); }
cublasStatus_t r_cublasGetVersion(cublasHandle_t h, int* v) { return p_cublasGetVersion_v2(h, v); }
cublasStatus_t r_cublasSetStream(cublasHandle_t h, CUstream s) { return p_cublasSetStream_v2(h, (cudaStream_t)s); }
cublasStatus_t r_cublasSetMathMode(cublasHandle_t h, cublasMath_t m) { return p_cublasSetMathMode(h, m); }

// Both GEMMs accumulate in float (CUBLAS_COMPUTE_32F, which never uses TF32
// unless the math mode allows it) and let cuBLAS pick the algorithm.
cublasStatus_t r_cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float* alpha,
	CUdeviceptr A, cudaDataType at, int lda, CUdeviceptr B, cudaDataType bt, int ldb, const float* beta,
	CUdeviceptr C, cudaDataType ct, int ldc) {
	return p_cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, alpha, (const void*)(uintptr_t)A, at,
		lda, (const void*)(uintptr_t)B, bt, ldb, beta, (void*)(uintptr_t)C, ct, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t r_cublasGemmStridedBatchedEx(cublasHandle_t h, int ta, int tb, int m, int n, int k,
	const float* alpha, CUdeviceptr A, cudaDataType at, int lda, long long sa, CUdeviceptr B, cudaDataType bt,
	int ldb, long long sb, const float* beta, CUdeviceptr C, cudaDataType ct, int ldc, long long sc, int batch) {
	return p_cublasGemmStridedBatchedEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
		k, alpha, (const void*)(uintptr_t)A, at, lda, sa, (const void*)(uintptr_t)B, bt, ldb, sb, beta,
		(void*)(uintptr_t)C, ct, ldc, sc, batch, CUBLAS_COMPUTE_32F,
		CUBLAS_GEMM_DEFAULT);
}

nvrtcResult r_nvrtcVersion(int* major, int* minor) { return p_nvrtcVersion(major, minor); }
const char* r_nvrtcGetErrorString(nvrtcResult r) { return p_nvrtcGetErrorString ? p_nvrtcGetErrorString(r) : NULL; }

int r_nvrtcSupportedArchs(int* archs, int max) {
	int n = 0;
	if (p_nvrtcGetNumSupportedArchs == NULL || p_nvrtcGetSupportedArchs == NULL) return -1;
	if (p_nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n < 0 || n > max) return -1;
	if (p_nvrtcGetSupportedArchs(archs) != NVRTC_SUCCESS) return -1;
	return n;
}

nvrtcResult r_nvrtcCompile(const char* src, const char* name, const char** opts, int nopts, int cubin,
	char** out, size_t* outn, char** log) {
	nvrtcProgram prog;
	*out = NULL;
	*outn = 0;
	*log = NULL;
	nvrtcResult r = p_nvrtcCreateProgram(&prog, src, name, 0, NULL, NULL);
	if (r != NVRTC_SUCCESS) return r;
	nvrtcResult cr = p_nvrtcCompileProgram(prog, nopts, opts);
	size_t ln = 0;
	if (p_nvrtcGetProgramLogSize(prog, &ln) == NVRTC_SUCCESS && ln > 1) {
		*log = malloc(ln);
		if (*log != NULL && p_nvrtcGetProgramLog(prog, *log) != NVRTC_SUCCESS) {
			free(*log);
			*log = NULL;
		}
	}
	if (cr != NVRTC_SUCCESS) {
		p_nvrtcDestroyProgram(&prog);
		return cr;
	}
	size_t n = 0;
	r = cubin ? p_nvrtcGetCUBINSize(prog, &n) : p_nvrtcGetPTXSize(prog, &n);
	if (r == NVRTC_SUCCESS) {
		*out = malloc(n);
		if (*out == NULL) {
			r = NVRTC_ERROR_OUT_OF_MEMORY;
		} else {
			r = cubin ? p_nvrtcGetCUBIN(prog, *out) : p_nvrtcGetPTX(prog, *out);
			*outn = n;
		}
	}
	p_nvrtcDestroyProgram(&prog);
	return r;
}
