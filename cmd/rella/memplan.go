package main

import (
	"fmt"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/model"
)

// gpuPlan is the memory plan of the model the config names on the GPU
// before any data is read: its weights in model.dtype (int8 projections
// with model.quantize) and one scoring pass. Training's own workspace
// depends on the examples and is checked when the trainer is made, still
// before any weight is uploaded.
func gpuPlan(c *configs.Config, mc model.Config) (cuda.MemoryPlan, error) {
	e := map[string]cuda.Elem{"fp16": cuda.F16, "bf16": cuda.BF16, "float32": cuda.F32}[c.Model.DType]
	q := c.Model.Quantize
	if q == "none" {
		q = ""
	}
	return cuda.PlanMemory(mc, e, q, cuda.DefaultMaxTokens, nil, 0, 0)
}

// planError refuses a plan that exceeds the device's total memory.
func planError(p cuda.MemoryPlan, total int64, device string, index int, quantized bool) error {
	if p.Fits(total) {
		return nil
	}
	hint := "set model.quantize=int8 (about half the weights), or use a larger GPU"
	if quantized {
		hint = "use a larger GPU"
	}
	return fmt.Errorf("model.path: the model does not fit on GPU %d (%s, %.1f GiB): it needs %s; %s (docs/memory.md lists what fits)",
		index, device, float64(total)/(1<<30), p, hint)
}
