package metrics

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bruteAUC counts every positive/negative pair directly.
func bruteAUC(labels []int, p []float64) float64 {
	var num, den float64
	for i := range p {
		for j := range p {
			if labels[i] != 1 || labels[j] != 0 {
				continue
			}
			den++
			switch {
			case p[i] > p[j]:
				num++
			case p[i] == p[j]:
				num += 0.5
			}
		}
	}
	return num / den
}

func TestAUCAgainstPairwiseCount(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		n := 2 + r.IntN(60)
		labels := make([]int, n)
		p := make([]float64, n)
		for i := range p {
			labels[i] = r.IntN(2)
			p[i] = float64(r.IntN(8)) / 8 // coarse values: many ties
		}
		labels[0], labels[1] = 0, 1
		got, want := AUC(labels, p), bruteAUC(labels, p)
		if math.Abs(got-want) > 1e-12 {
			t.Fatalf("trial %d: got %v, want %v", trial, got, want)
		}
	}
}

func TestAUCDegenerate(t *testing.T) {
	if v := AUC([]int{1, 1}, []float64{0.2, 0.3}); !math.IsNaN(v) {
		t.Errorf("only positives: got %v, want NaN", v)
	}
	if v := AUC([]int{0, 1}, []float64{0.5, 0.5}); v != 0.5 {
		t.Errorf("one tie: got %v, want 0.5", v)
	}
}

func TestLogLossAndAccuracy(t *testing.T) {
	labels := []int{1, 0, 1, 0}
	p := []float64{0.9, 0.2, 0, 1}
	clip := math.Log(1e-7)
	want := -(math.Log(0.9) + math.Log(0.8) + clip + math.Log(1-(1-Clip+0*p[0]))) / 4 // evaluated in float64, as the code does
	if got := LogLoss(labels, p); math.Abs(got-want) > 1e-12 {
		t.Errorf("logloss: got %v, want %v", got, want)
	}
	if got := Accuracy(labels, []float64{0.5, 0.49, 0.1, 0.7}); got != 0.5 {
		t.Errorf("accuracy: got %v, want 0.5 (p >= 0.5 is positive)", got)
	}
	r := Compute(labels, p)
	if r.N != 4 || r.AUC != bruteAUC(labels, p) {
		t.Errorf("Compute: got %+v", r)
	}
}
