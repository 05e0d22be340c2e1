package trainer

import (
	"fmt"
	"math"

	"github.com/rella-project/rella/engine"
)

// LossScaling is dynamic loss scaling for fp16 training, with the semantics
// of torch.cuda.amp.GradScaler: the engine multiplies the gradient of the
// loss by Scale before backpropagation (engine.LossScaler), so that small
// gradients survive fp16 storage; at the end of each accumulation window
// the trainer divides the summed LoRA gradients by Scale (before the token
// normalisation, clipping and AdamW, which therefore see unscaled
// gradients). When any of them is inf or NaN the optimiser step is skipped
// (logged; the step still counts and its learning-rate slot is used), the
// gradients are dropped and the scale is multiplied by Backoff; after
// Interval consecutive finite steps it is multiplied by Growth. The scale
// and the count of finite steps are part of the checkpointed state.
type LossScaling struct {
	Enabled  bool
	Init     float64 // initial scale (GradScaler: 2^16)
	Growth   float64 // growth factor (2)
	Backoff  float64 // backoff factor (0.5)
	Interval int     // finite steps between growths (2000)
}

// DefaultLossScaling returns GradScaler's defaults, enabled.
func DefaultLossScaling() LossScaling {
	return LossScaling{Enabled: true, Init: 65536, Growth: 2, Backoff: 0.5, Interval: 2000}
}

// Validate reports a setting GradScaler would not accept.
func (s LossScaling) Validate() error {
	if !s.Enabled {
		return nil
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !(s.Init > 0) || !finite(s.Init):
		return fmt.Errorf("trainer: loss scaling: initial scale must be positive, got %v", s.Init)
	case !(s.Growth > 1) || !finite(s.Growth):
		return fmt.Errorf("trainer: loss scaling: growth factor must exceed 1, got %v", s.Growth)
	case !(s.Backoff > 0 && s.Backoff < 1):
		return fmt.Errorf("trainer: loss scaling: backoff factor must be in (0, 1), got %v", s.Backoff)
	case s.Interval < 1:
		return fmt.Errorf("trainer: loss scaling: growth interval must be at least 1, got %d", s.Interval)
	}
	return nil
}

// String describes the settings (for the run's fingerprint).
func (s LossScaling) String() string {
	if !s.Enabled {
		return "off"
	}
	return fmt.Sprintf("dynamic init=%g growth=%g backoff=%g interval=%d", s.Init, s.Growth, s.Backoff, s.Interval)
}

// update is GradScaler.update: back off after an overflow, grow after
// Interval finite steps in a row.
func (s LossScaling) update(st *State, overflow bool) {
	if overflow {
		st.LossScale *= s.Backoff
		st.LossScaleGood = 0
		return
	}
	st.LossScaleGood++
	if st.LossScaleGood >= s.Interval {
		st.LossScale *= s.Growth
		st.LossScaleGood = 0
	}
}

// allFinite reports whether every gradient is finite.
func allFinite(params []*engine.Param) bool {
	for _, p := range params {
		for _, g := range p.Grad {
			if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
				return false
			}
		}
	}
	return true
}
