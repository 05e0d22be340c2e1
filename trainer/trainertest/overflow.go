package trainertest

import (
	"context"
	"math"

	"github.com/rella-project/rella/engine"
)

// Overflow wraps an engine to behave like an fp16 engine under dynamic loss
// scaling (engine.LossScaler): LossGrad adds Scale times the inner engine's
// gradient into Param.Grad, and every scaled gradient value of the call
// whose magnitude exceeds Max (fp16's largest finite value is 65504)
// becomes +inf or -inf, as an fp16 gradient buffer would overflow. Calls
// listed in NaNAt (1-based, counted over this engine's LossGrad calls) put
// a NaN into the first gradient instead, as an overflow inside a kernel
// would (NaNAt counts the calls of this engine only, so it is not for
// resumed runs). Max alone is deterministic: interrupted and resumed runs
// stay exact.
type Overflow struct {
	engine.Trainer
	Max   float64
	NaNAt map[int]bool

	Scale float64 // the last SetLossScale; 1 before any
	Calls int
	Seen  []float64 // the scale of each LossGrad call
}

var _ engine.LossScaler = (*Overflow)(nil)

// NewOverflow wraps inner with overflow above max.
func NewOverflow(inner engine.Trainer, max float64) *Overflow {
	return &Overflow{Trainer: inner, Max: max, Scale: 1}
}

// SetLossScale sets the factor of the next LossGrad calls.
func (o *Overflow) SetLossScale(s float64) { o.Scale = s }

// LossGrad runs the inner engine on zeroed gradients and adds the scaled
// result (with overflows) to the gradients held before the call.
func (o *Overflow) LossGrad(ctx context.Context, batch []engine.Example, seed uint64) (float64, int, error) {
	params := o.Params()
	held := make([][]float32, len(params))
	for i, p := range params {
		held[i] = append([]float32(nil), p.Grad...)
		clear(p.Grad)
	}
	loss, n, err := o.Trainer.LossGrad(ctx, batch, seed)
	o.Calls++
	o.Seen = append(o.Seen, o.Scale)
	for i, p := range params {
		for j, g := range p.Grad {
			v := float64(g) * o.Scale
			if math.Abs(v) > o.Max {
				v = math.Inf(int(math.Copysign(1, v)))
			}
			p.Grad[j] = held[i][j] + float32(v)
		}
	}
	if o.NaNAt[o.Calls] {
		params[0].Grad[0] = float32(math.NaN())
	}
	return loss, n, err
}
