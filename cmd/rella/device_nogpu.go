//go:build !rellagpu

package main

import (
	"fmt"

	"github.com/rella-project/rella/cuda"
)

// checkDevice checks that the device a config names can be used by this binary.
func checkDevice(device string, index int) error {
	if device == "gpu" {
		return fmt.Errorf("%w (or set model.device=cpu)", cuda.ErrNoGPUSupport)
	}
	return nil
}
