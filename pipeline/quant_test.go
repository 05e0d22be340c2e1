package pipeline

import (
	"testing"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/trainer"
)

// TestEngineSettingsFromModelSection: model.quantize reaches both engines'
// options ("none" is no quantisation) and fp16 training on the GPU (only)
// turns on GradScaler-style loss scaling.
func TestEngineSettingsFromModelSection(t *testing.T) {
	for _, c := range []struct {
		device, dtype, quantize string
		wantQ                   string
		wantScaling             bool
	}{
		{"gpu", "fp16", "int8", "int8", true},
		{"gpu", "bf16", "", "", false},
		{"gpu", "float32", "none", "", false},
		{"cpu", "float32", "int8", "int8", false},
	} {
		cfg := configs.Default()
		cfg.Model.Device, cfg.Model.DType, cfg.Model.Quantize = c.device, c.dtype, c.quantize
		r := &Runner{Cfg: &cfg}
		if got := r.gpuOptions().Quantize; got != c.wantQ {
			t.Errorf("%+v: gpu Quantize %q, want %q", c, got, c.wantQ)
		}
		if got := r.quantize(); got != c.wantQ {
			t.Errorf("%+v: cpu Quantize %q, want %q", c, got, c.wantQ)
		}
		ls := r.lossScaling()
		if ls.Enabled != c.wantScaling || (ls.Enabled && ls != trainer.DefaultLossScaling()) {
			t.Errorf("%+v: loss scaling %+v", c, ls)
		}
	}
}
