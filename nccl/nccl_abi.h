// nccl_abi.h: the few NCCL types and entry points package nccl uses,
// declared from NCCL's documented ABI (nccl.h of NCCL 2.x, stable since
// 2.0), because the CUDA header kit of scripts/build-gpu.sh has no nccl.h.
// The types keep nccl.h's names, so this file can be checked against the
// real header: compiled after nccl.h (which defines NCCL_H_), only the
// prototypes and the static assertions below remain, and a prototype that
// disagrees with NCCL's is a "conflicting types" error (TestABIHeader).
#ifndef RELLA_NCCL_ABI_H
#define RELLA_NCCL_ABI_H

#include <stddef.h>

// A CUDA stream: the type of cudaStream_t and CUstream, declared here so
// that the binding needs no CUDA header at all.
typedef struct CUstream_st* rnccl_stream;

#ifndef NCCL_H_
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct ncclComm* ncclComm_t;
typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId;
typedef enum {
	ncclSuccess = 0,
	ncclUnhandledCudaError = 1,
	ncclSystemError = 2,
	ncclInternalError = 3,
	ncclInvalidArgument = 4,
	ncclInvalidUsage = 5,
	ncclRemoteError = 6,
	ncclInProgress = 7,
	ncclNumResults = 8
} ncclResult_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;
typedef enum {
	ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4, ncclUint64 = 5,
	ncclFloat16 = 6, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9
} ncclDataType_t;
#endif

// The values package nccl relies on.
_Static_assert(NCCL_UNIQUE_ID_BYTES == 128, "ncclUniqueId is 128 bytes");
_Static_assert(sizeof(ncclUniqueId) == 128, "ncclUniqueId is 128 bytes");
_Static_assert(ncclSuccess == 0 && ncclInProgress == 7, "ncclResult_t values");
_Static_assert(ncclSum == 0 && ncclFloat32 == 7, "ncclRedOp_t / ncclDataType_t values");

ncclResult_t ncclGetVersion(int* version);
ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
	ncclRedOp_t op, ncclComm_t comm, rnccl_stream stream);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError);
const char* ncclGetErrorString(ncclResult_t result);
const char* ncclGetLastError(ncclComm_t comm);

#endif
