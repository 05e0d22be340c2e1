//go:build !rellagpu

package nccl

import "errors"

// Enabled reports whether this build has the binding (the rellagpu tag).
const Enabled = false

// ErrNoGPUSupport is returned by every entry point of a build without the
// rellagpu tag.
var ErrNoGPUSupport = errors.New("rella was built without GPU support (NCCL); build it with scripts/build-gpu.sh")

// Comm is an NCCL communicator; in this build none can be made.
type Comm struct{}

// Open returns ErrNoGPUSupport in this build.
func Open(path string) error { return ErrNoGPUSupport }

// Version returns ErrNoGPUSupport in this build.
func Version() (int, error) { return 0, ErrNoGPUSupport }

// GetUniqueID returns ErrNoGPUSupport in this build.
func GetUniqueID() (UniqueID, error) { return UniqueID{}, ErrNoGPUSupport }

// InitRank returns ErrNoGPUSupport in this build.
func InitRank(nranks int, id UniqueID, rank int) (*Comm, error) { return nil, ErrNoGPUSupport }

// AllReduceSumFloat32 returns ErrNoGPUSupport in this build.
func (*Comm) AllReduceSumFloat32(send, recv uintptr, count int, stream uintptr) error {
	return ErrNoGPUSupport
}

// Destroy returns ErrNoGPUSupport in this build.
func (*Comm) Destroy() error { return ErrNoGPUSupport }

// Abort returns ErrNoGPUSupport in this build.
func (*Comm) Abort() error { return ErrNoGPUSupport }

// AsyncError returns ErrNoGPUSupport in this build.
func (*Comm) AsyncError() error { return ErrNoGPUSupport }

// CheckSymbols returns ErrNoGPUSupport in this build.
func CheckSymbols(path string) ([]string, error) { return nil, ErrNoGPUSupport }

// Rank is 0 in this build (no communicator can be made).
func (*Comm) Rank() int { return 0 }

// Size is 1 in this build (no communicator can be made).
func (*Comm) Size() int { return 1 }
