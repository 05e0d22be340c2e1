// shim.h: the C side of package cuda's binding. Every CUDA entry point is
// looked up with dlsym in a library opened with dlopen, so the binary links
// no CUDA library; the wrappers below call through those pointers (cgo cannot
// call a C function pointer itself). Types come from the CUDA headers of the
// kit (scripts/build-gpu.sh), so each pointer has the header's exact type.
#ifndef RELLA_SHIM_H
#define RELLA_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include <cuda.h>
#include <cublas_v2.h>
#include <nvrtc.h>

// Opening: each returns 0, or -1 with a message in err (size n).
int rella_open_cuda(const char* path, char* err, int n);
int rella_open_cublas(const char* path, char* err, int n);
int rella_open_nvrtc(const char* path, char* err, int n);
// rella_check_symbols opens path and checks that it exports every entry
// point the binding uses from library which (0 cuda, 1 cublas, 2 nvrtc),
// without keeping anything; 0, or -1 with the missing names in err.
int rella_check_symbols(const char* path, int which, char* err, int n);

// Driver API.
CUresult r_cuInit(unsigned int flags);
CUresult r_cuDriverGetVersion(int* v);
CUresult r_cuDeviceGetCount(int* n);
CUresult r_cuDeviceGet(CUdevice* d, int ordinal);
CUresult r_cuDeviceGetName(char* name, int len, CUdevice d);
CUresult r_cuDeviceGetAttribute(int* v, CUdevice_attribute a, CUdevice d);
CUresult r_cuDeviceTotalMem(size_t* bytes, CUdevice d);
CUresult r_cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice d);
CUresult r_cuDevicePrimaryCtxRelease(CUdevice d);
CUresult r_cuCtxSetCurrent(CUcontext c);
CUresult r_cuCtxSynchronize(void);
CUresult r_cuMemGetInfo(size_t* free, size_t* total);
CUresult r_cuMemAlloc(CUdeviceptr* p, size_t bytes);
CUresult r_cuMemFree(CUdeviceptr p);
CUresult r_cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes, CUstream s);
CUresult r_cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream s);
CUresult r_cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s);
CUresult r_cuMemsetD16Async(CUdeviceptr p, unsigned short v, size_t n, CUstream s);
CUresult r_cuMemsetD32Async(CUdeviceptr p, unsigned int v, size_t n, CUstream s);
CUresult r_cuStreamCreate(CUstream* s, unsigned int flags);
CUresult r_cuStreamDestroy(CUstream s);
CUresult r_cuStreamSynchronize(CUstream s);
CUresult r_cuEventCreate(CUevent* e, unsigned int flags);
CUresult r_cuEventDestroy(CUevent e);
CUresult r_cuEventRecord(CUevent e, CUstream s);
CUresult r_cuEventSynchronize(CUevent e);
CUresult r_cuEventElapsedTime(float* ms, CUevent start, CUevent end);
CUresult r_cuModuleLoadData(CUmodule* m, const void* image);
CUresult r_cuModuleUnload(CUmodule m);
CUresult r_cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name);
// r_launch passes n kernel arguments, each held in an 8-byte slot of vals
// (a pointer, or a scalar in the slot's low bytes).
CUresult r_launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
	unsigned smem, CUstream s, uint64_t* vals, int n);
const char* r_cuErrorName(CUresult r);
const char* r_cuErrorString(CUresult r);

// cuBLAS.
cublasStatus_t r_cublasCreate(cublasHandle_t* h);
cublasStatus_t r_cublasDestroy(cublasHandle_t h);
cublasStatus_t r_cublasGetVersion(cublasHandle_t h, int* v);
cublasStatus_t r_cublasSetStream(cublasHandle_t h, CUstream s);
cublasStatus_t r_cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
cublasStatus_t r_cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float* alpha,
	CUdeviceptr A, cudaDataType at, int lda, CUdeviceptr B, cudaDataType bt, int ldb, const float* beta,
	CUdeviceptr C, cudaDataType ct, int ldc);
cublasStatus_t r_cublasGemmStridedBatchedEx(cublasHandle_t h, int ta, int tb, int m, int n, int k,
	const float* alpha, CUdeviceptr A, cudaDataType at, int lda, long long sa, CUdeviceptr B, cudaDataType bt,
	int ldb, long long sb, const float* beta, CUdeviceptr C, cudaDataType ct, int ldc, long long sc, int batch);

// NVRTC.
nvrtcResult r_nvrtcVersion(int* major, int* minor);
const char* r_nvrtcGetErrorString(nvrtcResult r);
// r_nvrtcSupportedArchs writes the architectures NVRTC compiles for (e.g.
// 75, 80, 90) into archs (room for max) and returns their number, or -1
// when the library cannot say (before CUDA 11.2) or has more than max.
int r_nvrtcSupportedArchs(int* archs, int max);
// r_nvrtcCompile compiles src with the options; on success *out (malloc'd,
// the caller frees it) holds a cubin (cubin != 0) or PTX, and *outn its size.
// The compiler log, if any, goes to *log (malloc'd, or NULL).
nvrtcResult r_nvrtcCompile(const char* src, const char* name, const char** opts, int nopts, int cubin,
	char** out, size_t* outn, char** log);

#endif
