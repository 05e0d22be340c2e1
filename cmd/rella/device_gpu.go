//go:build rellagpu

package main

import (
	"fmt"

	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/pipeline"
)

// checkMemory logs the GPU memory plan of the configured model and refuses
// it, before any data is read, when it exceeds the device's memory.
func checkMemory(r *pipeline.Runner) error {
	c := r.Cfg
	if c.Model.Device != "gpu" {
		return nil
	}
	mc, err := model.LoadConfig(c.Model.Path)
	if err != nil {
		return fmt.Errorf("model.path: %w", err)
	}
	p, err := gpuPlan(c, mc)
	if err != nil {
		return err
	}
	dev, err := cuda.OpenDevice(c.Model.DeviceIndex, r.Log)
	if err != nil {
		return fmt.Errorf("model.device_index=%d: %w", c.Model.DeviceIndex, err)
	}
	var total int64
	err = dev.Do(func() error {
		var err error
		_, total, err = dev.MemInfo()
		return err
	})
	name := dev.Name
	dev.Close()
	if err != nil {
		return fmt.Errorf("model.device_index=%d: %w", c.Model.DeviceIndex, err)
	}
	r.Log.Info("gpu memory plan", "gpu", name, "total_gib", fmt.Sprintf("%.1f", float64(total)/(1<<30)), "plan", p.String())
	return planError(p, total, name, c.Model.DeviceIndex, c.Model.Quantize == model.QuantInt8)
}

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
