package main

import (
	"strings"
	"testing"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/cuda"
)

// TestGPUPlanRefusal: 13B in fp16 is refused on a 16 GB V100 with a hint
// to quantise, fits once model.quantize=int8 (docs/memory.md's scoring
// table), and fits a 32 GB V100 unquantised.
func TestGPUPlanRefusal(t *testing.T) {
	c := configs.Default()
	c.Model.Device, c.Model.DType = "gpu", "fp16"
	v100 := int64(16160) << 20
	p, err := gpuPlan(&c, cuda.Vicuna13B)
	if err != nil {
		t.Fatal(err)
	}
	err = planError(p, v100, "Tesla V100-SXM2-16GB", 0, false)
	if err == nil || !strings.Contains(err.Error(), "model.quantize=int8") || !strings.Contains(err.Error(), "weights 24.24 GiB") {
		t.Errorf("13B fp16 on 16 GB: %v", err)
	}
	if err := planError(p, 32510<<20, "Tesla V100-SXM2-32GB", 0, false); err != nil {
		t.Errorf("13B fp16 on 32 GB: %v", err)
	}
	c.Model.Quantize = "int8"
	if p, _ = gpuPlan(&c, cuda.Vicuna13B); planError(p, v100, "V100", 0, true) != nil {
		t.Errorf("13B int8 on 16 GB refused: plan %s", p)
	}
}
