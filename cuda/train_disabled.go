//go:build !rellagpu

package cuda

import (
	"context"
	"log/slog"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

var _ engine.LossScaler = (*Trainer)(nil)

// Trainer is the GPU engine with LoRA adapters; in this build it cannot be made.
type Trainer struct{ Engine }

// NewTrainer returns ErrNoGPUSupport in this build.
func NewTrainer(m *model.Model, opts TrainOptions, log *slog.Logger) (*Trainer, error) {
	return nil, ErrNoGPUSupport
}

// Params returns nil in this build.
func (*Trainer) Params() []*engine.Param { return nil }

// SetLossScale does nothing in this build.
func (*Trainer) SetLossScale(float64) {}

// LossGrad returns ErrNoGPUSupport in this build.
func (*Trainer) LossGrad(ctx context.Context, batch []engine.Example, dropoutSeed uint64) (float64, int, error) {
	return 0, 0, ErrNoGPUSupport
}
