package cuda

import (
	"errors"
	"math"
	"testing"
)

func TestCompare(t *testing.T) {
	want := []float32{1, -2, 100, 0}
	if err := Compare("ok", []float32{1.00001, -2.00001, 100.0005, 1e-6}, want, 1e-5, 1e-5); err != nil {
		t.Errorf("within tolerance: %v", err)
	}
	err := Compare("x", []float32{1, -2.1, 100, float32(math.NaN())}, want, 1e-5, 1e-5)
	var mm *Mismatch
	if !errors.As(err, &mm) {
		t.Fatalf("got %v, want a *Mismatch", err)
	}
	if mm.Bad != 2 || mm.Index != 1 || mm.Tensor != "x" || mm.Got != -2.1 {
		t.Errorf("got %+v, want 2 bad, first at 1 (-2.1) in x", mm)
	}
	if Compare("inf", []float32{float32(math.Inf(1))}, []float32{float32(math.Inf(1))}, 1, 1) == nil {
		t.Errorf("Inf passed")
	}
	if Compare("nanref", []float32{0}, []float32{float32(math.NaN())}, 1, 1) == nil {
		t.Errorf("NaN reference passed")
	}
	if Compare("len", []float32{0}, []float32{0, 0}, 1, 1) == nil {
		t.Errorf("length mismatch passed")
	}
}

func TestRelErr(t *testing.T) {
	if got := RelErr([]float32{3, 4}, []float32{3, 4}); got != 0 {
		t.Errorf("equal: got %g, want 0", got)
	}
	// ||(0,1)|| / ||(3,4)|| = 1/5.
	if got := RelErr([]float32{3, 5}, []float32{3, 4}); math.Abs(got-0.2) > 1e-12 {
		t.Errorf("got %g, want 0.2", got)
	}
	if got := RelErr([]float32{float32(math.NaN()), 4}, []float32{3, 4}); !math.IsInf(got, 1) {
		t.Errorf("NaN: got %g, want +Inf", got)
	}
}
