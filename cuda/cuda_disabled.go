//go:build !rellagpu

package cuda

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

// Enabled reports whether this build has GPU support (the rellagpu tag).
const Enabled = false

// ErrNoGPUSupport is returned by every entry point of a build without the rellagpu tag.
var ErrNoGPUSupport = errors.New("rella was built without GPU support; build it with scripts/build-gpu.sh")

var _ engine.Engine = (*Engine)(nil)

// Engine is the GPU engine; in this build it cannot be made.
type Engine struct{}

// NewEngine returns ErrNoGPUSupport in this build.
func NewEngine(m *model.Model, deviceIndex int, log *slog.Logger) (*Engine, error) {
	return nil, ErrNoGPUSupport
}

// NewEngineWith returns ErrNoGPUSupport in this build.
func NewEngineWith(m *model.Model, opts Options, log *slog.Logger) (*Engine, error) {
	return nil, ErrNoGPUSupport
}

// LastLogits returns ErrNoGPUSupport in this build.
func (*Engine) LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error) {
	return nil, ErrNoGPUSupport
}

// MeanHidden returns ErrNoGPUSupport in this build.
func (*Engine) MeanHidden(ctx context.Context, seqs [][]int) ([][]float32, error) {
	return nil, ErrNoGPUSupport
}

// Close does nothing in this build.
func (*Engine) Close() error { return nil }

// SelfTest returns ErrNoGPUSupport in this build.
func SelfTest(ctx context.Context, opts SelfTestOptions, w io.Writer, log *slog.Logger) error {
	return ErrNoGPUSupport
}
