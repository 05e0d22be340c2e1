//go:build !rellagpu

package main

import (
	"context"

	"github.com/rella-project/rella/distributed"
)

// ncclGroup keeps the all-reduce on the TCP group in a build without GPU
// support (model.device=gpu fails its device check before this anyway).
func ncclGroup(ctx context.Context, ctl distributed.Communicator, index int, e *env) (distributed.Communicator, error) {
	return ctl, nil
}
