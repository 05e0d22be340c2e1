package metrics

import (
	"encoding/json"
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

// A single-class evaluation has no AUC: its JSON holds null there (not a
// failed encode), keeps log loss and accuracy, and reads back as NaN.
func TestSingleClassResultJSON(t *testing.T) {
	r := Compute([]int{1, 1, 1}, []float64{0.9, 0.2, 0.6})
	if r.Defined() || !math.IsNaN(r.AUC) {
		t.Fatalf("AUC of one class: got %v, want NaN", r.AUC)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if v, ok := m["auc"]; !ok || v != nil {
		t.Errorf("auc: got %v (present %v), want null in %s", v, ok, b)
	}
	if m["acc"] != 2.0/3 || m["n"] != 3.0 {
		t.Errorf("acc/n lost: %s", b)
	}
	want := -(math.Log(0.9) + math.Log(0.2) + math.Log(0.6)) / 3
	if v, _ := m["logloss"].(float64); math.Abs(v-want) > 1e-12 {
		t.Errorf("logloss: got %v, want %v", m["logloss"], want)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(back.AUC) || back.Accuracy != r.Accuracy || back.N != 3 {
		t.Errorf("read back %+v, want %+v", back, r)
	}
	inf := Result{AUC: 0.5, LogLoss: math.Inf(1), N: 0, Accuracy: math.NaN()}
	if b, err := json.Marshal(inf); err != nil || string(b) != `{"auc":0.5,"logloss":null,"acc":null,"n":0}` {
		t.Errorf("Inf/NaN: got %s, %v", b, err)
	}
}
