// Package nccl binds the few NCCL calls data-parallel training needs:
// ncclGetUniqueId, ncclCommInitRank, ncclAllReduce (float32 sum) and
// ncclCommDestroy/Abort, with ncclGetErrorString for messages.
//
// Like package cuda it is behind the build tag rellagpu and links nothing:
// Open loads libnccl.so.2 with dlopen (the nvidia/cuda runtime images and
// NVIDIA's driver/CUDA repositories ship it) and looks every entry point
// up by name. The types and prototypes come from nccl_abi.h, declared from
// NCCL's documented ABI because scripts/build-gpu.sh's header kit has no
// nccl.h; TestABIHeader checks them against a real nccl.h when one is at
// hand (RELLA_NCCL_INCLUDE, or .kit/nccl/include).
//
// Use, on every rank (one process per GPU):
//
//	var id nccl.UniqueID
//	if rank == 0 { id, err = nccl.GetUniqueID() }
//	blob, err := distributed.Rendezvous(ctx, opts, id[:]) // rank 0's id to all
//	copy(id[:], blob)
//	comm, err := nccl.InitRank(size, id, rank)            // with the rank's device current
//	err = comm.AllReduceSumFloat32(dptr, dptr, n, stream)  // in place is allowed
//	comm.Destroy()
//
// Without the tag, every entry point returns ErrNoGPUSupport.
package nccl

// UniqueIDBytes is the size of NCCL's unique id (NCCL_UNIQUE_ID_BYTES).
const UniqueIDBytes = 128

// UniqueID is the ncclUniqueId rank 0 makes and hands to every rank.
type UniqueID [UniqueIDBytes]byte

// DefaultLibrary is the library Open loads when given "".
const DefaultLibrary = "libnccl.so.2"
