//go:build !rellagpu

package ncclcomm

import (
	"context"
	"errors"

	"github.com/rella-project/rella/distributed"
)

// Enabled reports whether this build has NCCL support.
const Enabled = false

// Comm is the NCCL communicator; in this build none can be made.
type Comm struct{ distributed.Communicator }

// New returns an error in this build: it has no GPU support.
func New(ctx context.Context, ctl distributed.Communicator, dev any, library string) (*Comm, error) {
	return nil, errors.New("rella was built without GPU support (NCCL); build it with scripts/build-gpu.sh")
}
