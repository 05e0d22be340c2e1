//go:build rellagpu

package main

import (
	"context"
	"fmt"

	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/distributed/ncclcomm"
)

// ncclGroup makes the NCCL communicator of ctl's rank on GPU index; closing
// it also releases the device and ctl.
func ncclGroup(ctx context.Context, ctl distributed.Communicator, index int, e *env) (distributed.Communicator, error) {
	dev, err := cuda.OpenDevice(index, e.log)
	if err != nil {
		return nil, fmt.Errorf("data-parallel training: NCCL: %w", err)
	}
	lib, _ := e.getenv("RELLA_NCCL_LIBRARY")
	c, err := ncclcomm.New(ctx, ctl, dev, lib)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("data-parallel training: %w (RELLA_NCCL=0 all-reduces over TCP instead)", err)
	}
	e.log.Info("data-parallel training: gradients all-reduced with NCCL", "device", index)
	return closeAlso{c, dev.Close}, nil
}

// closeAlso closes an extra resource after the communicator.
type closeAlso struct {
	distributed.Communicator
	also func() error
}

func (c closeAlso) Close() error {
	err := c.Communicator.Close()
	if aerr := c.also(); err == nil {
		err = aerr
	}
	return err
}
