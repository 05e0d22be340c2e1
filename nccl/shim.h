// shim.h: the C side of package nccl. libnccl.so.2 is opened with dlopen
// and every entry point looked up with dlsym (like package cuda does for
// libcublas), so the binary links no NCCL; these wrappers call through the
// pointers, whose types come from nccl_abi.h.
#ifndef RELLA_NCCL_SHIM_H
#define RELLA_NCCL_SHIM_H

#include <stdint.h>
#include "nccl_abi.h"

// rnccl_open opens path and looks up every entry point: 0, or -1 with a
// message in err (size n). Calling it again after success does nothing.
int rnccl_open(const char* path, char* err, int n);
// rnccl_check_symbols reports (in err) the entry points path lacks, without
// keeping it open: 0 when it has them all, -1 when some are missing, -2
// (dlerror in err) when it cannot be loaded.
int rnccl_check_symbols(const char* path, char* err, int n);

ncclResult_t r_ncclGetVersion(int* v);
ncclResult_t r_ncclGetUniqueId(ncclUniqueId* id);
ncclResult_t r_ncclCommInitRank(ncclComm_t* comm, int nranks, const ncclUniqueId* id, int rank);
// Device pointers and the stream travel as integers, so Go never holds them
// as Go pointers.
ncclResult_t r_ncclAllReduceSumFloat32(uintptr_t send, uintptr_t recv, size_t count, ncclComm_t comm, uintptr_t stream);
ncclResult_t r_ncclCommDestroy(ncclComm_t comm);
ncclResult_t r_ncclCommAbort(ncclComm_t comm);
ncclResult_t r_ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* e);
const char* r_ncclGetErrorString(ncclResult_t r);
const char* r_ncclGetLastError(ncclComm_t comm);

#endif
