package cpu

import (
	"math"
	"testing"
)

func TestExpNonPos(t *testing.T) {
	worst := 0.0
	for i := 0; i <= 2000000; i++ {
		x := -745 * float64(i) / 2000000
		want, got := math.Exp(x), expNonPos(x)
		if want < 1e-300 {
			if got > 1e-290 {
				t.Fatalf("exp(%g) = %g, want %g", x, got, want)
			}
			continue
		}
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	if worst > 1e-8 {
		t.Errorf("relative error up to %g", worst)
	}
	t.Logf("max relative error %.3g", worst)
}

func TestSigmoidFloat32(t *testing.T) {
	worst := 0.0
	for i := -2000000; i <= 2000000; i++ {
		x := 100 * float64(i) / 2000000
		want, got := 1/(1+math.Exp(-x)), sigmoid[float32](x)
		if want < 1e-300 {
			continue
		}
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	if worst > 2e-8 {
		t.Errorf("relative error up to %g", worst)
	}
	if got := sigmoid[float64](0.3); got != 1/(1+math.Exp(-0.3)) {
		t.Errorf("float64 sigmoid(0.3) = %v, want math.Exp's", got)
	}
	t.Logf("max relative error %.3g", worst)
}
