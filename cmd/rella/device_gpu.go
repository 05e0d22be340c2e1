//go:build rellagpu

package main

import (
	"fmt"

	"github.com/rella-project/rella/cuda"
)

// checkDevice checks that the device a config names can be used: for the
// GPU, that the CUDA driver loads and device model.device_index exists.
func checkDevice(device string, index int) error {
	if device != "gpu" {
		return nil
	}
	n, err := cuda.DeviceCount()
	if err != nil {
		return fmt.Errorf("no usable CUDA driver: %w (or set model.device=cpu)", err)
	}
	if index >= n {
		return fmt.Errorf("model.device_index=%d, but %d CUDA device(s) are visible (or set model.device=cpu)", index, n)
	}
	return nil
}
