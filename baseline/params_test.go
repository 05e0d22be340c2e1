package baseline

import (
	"math"
	"testing"

	"gorgonia.org/tensor"
)

// TestAdamAgainstHandComputation follows two Adam steps of one weight with
// weight decay by the formulas of Kingma & Ba (torch.optim.Adam's L2 form).
func TestAdamAgainstHandComputation(t *testing.T) {
	p := &Param{Name: "w", Value: tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, -2})), Decay: true}
	a := NewAdam(0.1, 0.01)
	w := []float64{1, -2}
	var m, v [2]float64
	for step, g := range [][]float64{{0.5, -3}, {-0.25, 1}} {
		a.Step([]*Param{p}, [][]float64{g})
		for i := range w {
			gi := g[i] + 0.01*w[i]
			m[i] = 0.9*m[i] + 0.1*gi
			v[i] = 0.999*v[i] + 0.001*gi*gi
			mh := m[i] / (1 - math.Pow(0.9, float64(step+1)))
			vh := v[i] / (1 - math.Pow(0.999, float64(step+1)))
			w[i] -= 0.1 * mh / (math.Sqrt(vh) + 1e-8)
		}
		got := p.Value.Data().([]float64)
		for i := range w {
			if math.Abs(got[i]-w[i]) > 1e-15 {
				t.Fatalf("step %d: w[%d] = %.17g, want %.17g", step+1, i, got[i], w[i])
			}
		}
	}
}
