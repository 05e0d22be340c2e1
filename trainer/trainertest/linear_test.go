package trainertest

import (
	"context"
	"math"
	"testing"

	"github.com/rella-project/rella/lora"
)

// TestLinearGradientFiniteDifferences checks LossGrad's hand-derived
// gradient against central differences of the loss (same dropout mask).
func TestLinearGradientFiniteDifferences(t *testing.T) {
	o := lora.Options{R: 3, Alpha: 6, Dropout: 0.2, TargetModules: []string{"q_proj"}}
	m := NewLinear(9, 4, o, 3)
	batch, _, _ := Data(5, 9, 8)
	const seed = 77
	// Start from nonzero gradients: LossGrad must add, not overwrite.
	for _, p := range m.Params() {
		for i := range p.Grad {
			p.Grad[i] = 0.25
		}
	}
	if _, n, err := m.LossGrad(context.Background(), batch, seed); err != nil || n != 7 {
		t.Fatalf("LossGrad: n=%d err=%v, want 7 labelled tokens", n, err)
	}
	for _, p := range m.Params() {
		for i := range p.Value {
			orig := p.Value[i]
			// float32 parameters: h = 1e-2 keeps rounding error of the
			// difference (~1e-7/h relative) well below the tolerance.
			const h = 1e-2
			p.Value[i] = orig + h
			up := m.Loss(batch, seed)
			p.Value[i] = orig - h
			down := m.Loss(batch, seed)
			p.Value[i] = orig
			fd := (up - down) / (float64(float32(orig+h)) - float64(float32(orig-h)))
			got := float64(p.Grad[i]) - 0.25
			if math.Abs(got-fd) > 2e-3*math.Abs(fd)+2e-4 {
				t.Errorf("%s[%d]: gradient %v, finite difference %v", p.Name, i, got, fd)
			}
		}
	}
}

// TestLinearDropoutSeed: the same seed gives the same loss, another seed
// (with dropout on) a different one.
func TestLinearDropoutSeed(t *testing.T) {
	o := lora.Options{R: 2, Alpha: 4, Dropout: 0.5, TargetModules: []string{"q_proj"}}
	m := NewLinear(9, 4, o, 3)
	batch, _, _ := Data(6, 9, 1)
	if a, b := m.Loss(batch, 1), m.Loss(batch, 1); a != b {
		t.Errorf("same seed: %v vs %v", a, b)
	}
	if a, b := m.Loss(batch, 1), m.Loss(batch, 2); a == b {
		t.Errorf("different seeds give the same loss %v", a)
	}
}
