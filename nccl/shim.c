//go:build rellagpu

// shim.c: dlopen/dlsym loading of libnccl.so.2 and thin wrappers that call
// through the loaded pointers. See shim.h.

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "shim.h"

#define NCCL_FNS(X) \
	X(ncclGetVersion) X(ncclGetUniqueId) X(ncclCommInitRank) X(ncclAllReduce) X(ncclCommDestroy) \
	X(ncclCommAbort) X(ncclCommGetAsyncError) X(ncclGetErrorString)

// ncclGetLastError (NCCL >= 2.13) is optional: older libraries lack it.
static __typeof__(ncclGetLastError)* p_ncclGetLastError;

#define DECL(name) static __typeof__(name)* p_##name;
NCCL_FNS(DECL)

static void* handle;

#define LOAD(name) \
	if ((p_##name = (__typeof__(name)*)dlsym(h, #name)) == NULL) { \
		snprintf(err, n, "%s: no symbol %s", path, #name); \
		dlclose(h); \
		return -1; \
	}

int rnccl_open(const char* path, char* err, int n) {
	if (handle != NULL) return 0;
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char* e = dlerror();
		snprintf(err, n, "%s", e ? e : path);
		return -1;
	}
	NCCL_FNS(LOAD)
	p_ncclGetLastError = (__typeof__(ncclGetLastError)*)dlsym(h, "ncclGetLastError");
	handle = h;
	return 0;
}

#define CHECK(name) \
	if (dlsym(h, #name) == NULL) { \
		size_t l = strlen(err); \
		snprintf(err + l, (size_t)n > l ? (size_t)n - l : 0, " %s", #name); \
		missing++; \
	}

int rnccl_check_symbols(const char* path, char* err, int n) {
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	int missing = 0;
	if (h == NULL) {
		const char* e = dlerror();
		snprintf(err, n, "%s", e ? e : path);
		return -2;
	}
	err[0] = 0;
	NCCL_FNS(CHECK)
	dlclose(h);
	return missing ? -1 : 0;
}

ncclResult_t r_ncclGetVersion(int* v) { return p_ncclGetVersion(v); }
ncclResult_t r_ncclGetUniqueId(ncclUniqueId* id) { return p_ncclGetUniqueId(id); }
ncclResult_t r_ncclCommInitRank(ncclComm_t* comm, int nranks, const ncclUniqueId* id, int rank) {
	return p_ncclCommInitRank(comm, nranks, *id, rank);
}
ncclResult_t r_ncclAllReduceSumFloat32(uintptr_t send, uintptr_t recv, size_t count, ncclComm_t comm, uintptr_t stream) {
	return p_ncclAllReduce((const void*)send, (void*)recv, count, ncclFloat32, ncclSum, comm, (rnccl_stream)stream);
}
ncclResult_t r_ncclCommDestroy(ncclComm_t comm) { return p_ncclCommDestroy(comm); }
ncclResult_t r_ncclCommAbort(ncclComm_t comm) { return p_ncclCommAbort(comm); }
ncclResult_t r_ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* e) { return p_ncclCommGetAsyncError(comm, e); }
const char* r_ncclGetErrorString(ncclResult_t r) { return p_ncclGetErrorString ? p_ncclGetErrorString(r) : NULL; }
const char* r_ncclGetLastError(ncclComm_t comm) { return p_ncclGetLastError ? p_ncclGetLastError(comm) : NULL; }
