//go:build !rellagpu

package main

import (
	"fmt"

	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/pipeline"
)

// checkMemory has nothing to check in a build without the GPU engine
// (checkDevice refuses model.device=gpu first).
func checkMemory(*pipeline.Runner) error { return nil }

// checkDevice checks that the device a config names can be used by this binary.
func checkDevice(device string, index int) error {
	if device == "gpu" {
		return fmt.Errorf("%w (or set model.device=cpu)", cuda.ErrNoGPUSupport)
	}
	return nil
}
