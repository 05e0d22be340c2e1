//go:build rellagpu

package nccl

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include <string.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// Enabled reports whether this build has the binding (the rellagpu tag).
const Enabled = true

// Error is a failed NCCL call.
type Error struct {
	Op   string // the NCCL function
	Code int    // its ncclResult_t
	Msg  string // ncclGetErrorString, and ncclGetLastError when it says more
}

func (e *Error) Error() string { return fmt.Sprintf("%s: NCCL error %d: %s", e.Op, e.Code, e.Msg) }

var (
	openMu   sync.Mutex
	openPath string
)

// Open loads libnccl.so.2 (DefaultLibrary when path is "") and looks up
// every entry point. Later calls return the first call's outcome on
// success; after a failure, they try again.
func Open(path string) error {
	if path == "" {
		path = DefaultLibrary
	}
	openMu.Lock()
	defer openMu.Unlock()
	if openPath != "" {
		return nil
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [512]C.char
	if C.rnccl_open(cpath, &buf[0], C.int(len(buf))) != 0 {
		return fmt.Errorf("open NCCL (%s; install libnccl2 or use an nvidia/cuda runtime image): %s", path, C.GoString(&buf[0]))
	}
	openPath = path
	return nil
}

// CheckSymbols loads the library at path (without keeping it) and returns
// the entry points of the binding it lacks; err when it cannot be loaded.
func CheckSymbols(path string) (missing []string, err error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var buf [1024]C.char
	switch C.rnccl_check_symbols(cpath, &buf[0], C.int(len(buf))) {
	case 0:
		return nil, nil
	case -1:
		return strings.Fields(C.GoString(&buf[0])), nil
	}
	return nil, fmt.Errorf("load %s: %s", path, C.GoString(&buf[0]))
}

func opened() error {
	openMu.Lock()
	defer openMu.Unlock()
	if openPath == "" {
		return fmt.Errorf("NCCL is not loaded: call nccl.Open first")
	}
	return nil
}

func check(op string, r C.ncclResult_t, comm C.ncclComm_t) error {
	if r == C.ncclSuccess {
		return nil
	}
	msg := "unknown error"
	if s := C.r_ncclGetErrorString(r); s != nil {
		msg = C.GoString(s)
	}
	if s := C.r_ncclGetLastError(comm); s != nil {
		if last := C.GoString(s); last != "" {
			msg += " (" + last + ")"
		}
	}
	return &Error{Op: op, Code: int(r), Msg: msg}
}

// Version is the loaded library's version code (e.g. 22203 for 2.22.3).
func Version() (int, error) {
	if err := opened(); err != nil {
		return 0, err
	}
	var v C.int
	if err := check("ncclGetVersion", C.r_ncclGetVersion(&v), nil); err != nil {
		return 0, err
	}
	return int(v), nil
}

// GetUniqueID makes the id rank 0 hands to every rank (ncclGetUniqueId).
func GetUniqueID() (UniqueID, error) {
	var id UniqueID
	if err := opened(); err != nil {
		return id, err
	}
	var cid C.ncclUniqueId
	if err := check("ncclGetUniqueId", C.r_ncclGetUniqueId(&cid), nil); err != nil {
		return id, err
	}
	copy(id[:], C.GoBytes(unsafe.Pointer(&cid.internal[0]), UniqueIDBytes))
	return id, nil
}

// Comm is an NCCL communicator of one rank.
type Comm struct {
	c          C.ncclComm_t
	rank, size int
}

// InitRank joins rank (0..nranks-1) to the communicator named by id
// (ncclCommInitRank). It blocks until every rank has called it; the CUDA
// device of this rank must be current on the calling thread (lock the
// goroutine to its thread with runtime.LockOSThread around CUDA and NCCL
// calls).
func InitRank(nranks int, id UniqueID, rank int) (*Comm, error) {
	if err := opened(); err != nil {
		return nil, err
	}
	if nranks < 1 || rank < 0 || rank >= nranks {
		return nil, fmt.Errorf("ncclCommInitRank: rank %d of %d: the rank must be in 0..nranks-1", rank, nranks)
	}
	var cid C.ncclUniqueId
	C.memcpy(unsafe.Pointer(&cid.internal[0]), unsafe.Pointer(&id[0]), UniqueIDBytes)
	var c C.ncclComm_t
	if err := check("ncclCommInitRank", C.r_ncclCommInitRank(&c, C.int(nranks), &cid, C.int(rank)), nil); err != nil {
		return nil, fmt.Errorf("rank %d of %d: %w", rank, nranks, err)
	}
	return &Comm{c: c, rank: rank, size: nranks}, nil
}

// Rank and Size are the communicator's.
func (c *Comm) Rank() int { return c.rank }
func (c *Comm) Size() int { return c.size }

// AllReduceSumFloat32 sums count float32 values of send over the ranks into
// recv (device pointers; send == recv is allowed), enqueued on stream (a
// CUstream as an integer; 0 is the legacy default stream). It returns once
// enqueued: synchronise the stream before reading recv.
func (c *Comm) AllReduceSumFloat32(send, recv uintptr, count int, stream uintptr) error {
	if c == nil || c.c == nil {
		return fmt.Errorf("ncclAllReduce: the communicator is destroyed")
	}
	if count < 0 {
		return fmt.Errorf("ncclAllReduce: count %d", count)
	}
	return check("ncclAllReduce", C.r_ncclAllReduceSumFloat32(C.uintptr_t(send), C.uintptr_t(recv), C.size_t(count), c.c, C.uintptr_t(stream)), c.c)
}

// AsyncError is ncclCommGetAsyncError: an error from a peer or the
// network that broke the communicator, or nil.
func (c *Comm) AsyncError() error {
	if c == nil || c.c == nil {
		return nil
	}
	var e C.ncclResult_t
	if err := check("ncclCommGetAsyncError", C.r_ncclCommGetAsyncError(c.c, &e), c.c); err != nil {
		return err
	}
	if e == C.ncclInProgress {
		return nil
	}
	return check("NCCL communicator", e, c.c)
}

// Destroy frees the communicator once its pending operations are done.
func (c *Comm) Destroy() error {
	if c == nil || c.c == nil {
		return nil
	}
	err := check("ncclCommDestroy", C.r_ncclCommDestroy(c.c), nil)
	c.c = nil
	return err
}

// Abort frees the communicator without waiting (after an error, or when a
// peer is gone).
func (c *Comm) Abort() error {
	if c == nil || c.c == nil {
		return nil
	}
	err := check("ncclCommAbort", C.r_ncclCommAbort(c.c), nil)
	c.c = nil
	return err
}
