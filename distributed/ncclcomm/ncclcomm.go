//go:build rellagpu

package ncclcomm

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/nccl"
)

// Enabled reports whether this build has NCCL support.
const Enabled = true

// Comm is one rank's communicator; see the package doc.
type Comm struct {
	distributed.Communicator // the TCP group: everything but the float32 sum
	dev                      *cuda.Device
	nc                       *nccl.Comm
}

// New makes the NCCL communicator of ctl's rank on device (a device this
// process opened; its thread has the primary context current): rank 0 makes
// the unique id, ctl broadcasts it, and every rank joins (ncclCommInitRank
// blocks until all have). library is the NCCL library to load ("" for
// libnccl.so.2). Close destroys the NCCL communicator and closes ctl.
func New(ctx context.Context, ctl distributed.Communicator, dev *cuda.Device, library string) (*Comm, error) {
	if err := nccl.Open(library); err != nil {
		return nil, fmt.Errorf("nccl: %w", err)
	}
	var id nccl.UniqueID
	if ctl.Rank() == 0 {
		var err error
		if id, err = nccl.GetUniqueID(); err != nil {
			return nil, err
		}
	}
	blob, err := ctl.Broadcast(ctx, 0, id[:])
	if err != nil {
		return nil, fmt.Errorf("nccl: handing rank 0's unique id to every rank: %w", err)
	}
	if len(blob) != nccl.UniqueIDBytes {
		return nil, fmt.Errorf("nccl: rank 0's unique id has %d bytes, want %d", len(blob), nccl.UniqueIDBytes)
	}
	copy(id[:], blob)
	var nc *nccl.Comm
	err = dev.Do(func() error {
		var err error
		nc, err = nccl.InitRank(ctl.Size(), id, ctl.Rank())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Comm{Communicator: ctl, dev: dev, nc: nc}, nil
}

// AllReduceSumFloat32 sums x over the ranks with NCCL on the device.
func (c *Comm) AllReduceSumFloat32(ctx context.Context, x []float32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(x) == 0 {
		return nil
	}
	host := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(host[4*i:], math.Float32bits(v))
	}
	err := c.dev.Do(func() error {
		buf, err := c.dev.Alloc(int64(len(host)))
		if err != nil {
			return err
		}
		defer c.dev.Free(buf)
		if err := c.dev.Upload(buf, host); err != nil {
			return err
		}
		if err := c.nc.AllReduceSumFloat32(buf.Ptr(), buf.Ptr(), len(x), c.dev.Stream()); err != nil {
			return err
		}
		return c.dev.Download(host, buf) // waits for the stream
	})
	if err != nil {
		return fmt.Errorf("nccl all-reduce of %d float32 on rank %d: %w", len(x), c.Rank(), err)
	}
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(host[4*i:]))
	}
	return nil
}

// Close destroys the NCCL communicator and closes the TCP group.
func (c *Comm) Close() error {
	var err error
	if c.nc != nil {
		err = c.dev.Do(c.nc.Destroy)
		c.nc = nil
	}
	if cerr := c.Communicator.Close(); err == nil {
		err = cerr
	}
	return err
}
