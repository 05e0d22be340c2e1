// Package metrics computes the CTR metrics ReLLa reports: AUC, log loss and
// accuracy (RELLA.md section 6).
package metrics

import (
	"encoding/json"
	"math"
	"sort"
)

// Result holds the metrics of one evaluation.
type Result struct {
	AUC      float64 `json:"auc"`
	LogLoss  float64 `json:"logloss"`
	Accuracy float64 `json:"acc"`
	N        int     `json:"n"`
}

// Defined reports whether the AUC is a number: it is not when the labels
// hold one class only (or none).
func (r Result) Defined() bool { return !math.IsNaN(r.AUC) && !math.IsInf(r.AUC, 0) }

// jsonResult is Result as JSON holds it: a metric that is not a finite
// number (the AUC of one class, any metric of no samples) is null, since
// JSON has no NaN.
type jsonResult struct {
	AUC      *float64 `json:"auc"`
	LogLoss  *float64 `json:"logloss"`
	Accuracy *float64 `json:"acc"`
	N        int      `json:"n"`
}

// Finite returns &v, or nil when v is NaN or infinite, so that encoding/json
// writes null instead of failing with "unsupported value: NaN".
func Finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func orNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

// MarshalJSON writes the metrics with null for an undefined value.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonResult{Finite(r.AUC), Finite(r.LogLoss), Finite(r.Accuracy), r.N})
}

// UnmarshalJSON reads what MarshalJSON writes; null becomes NaN.
func (r *Result) UnmarshalJSON(b []byte) error {
	var j jsonResult
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Result{AUC: orNaN(j.AUC), LogLoss: orNaN(j.LogLoss), Accuracy: orNaN(j.Accuracy), N: j.N}
	return nil
}

// Clip is the probability clipping applied before the log loss.
const Clip = 1e-7

// Compute returns AUC, log loss and accuracy of predictions p for binary
// labels (0 or 1). It panics if the lengths differ (a programming error).
func Compute(labels []int, p []float64) Result {
	if len(labels) != len(p) {
		panic("metrics: labels and predictions differ in length")
	}
	return Result{AUC: AUC(labels, p), LogLoss: LogLoss(labels, p), Accuracy: Accuracy(labels, p), N: len(p)}
}

// AUC is the area under the ROC curve: the probability that a random positive
// scores above a random negative, ties counting one half. It is computed from
// average ranks in O(n log n). With no positives or no negatives it is NaN.
func AUC(labels []int, p []float64) float64 {
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return p[idx[a]] < p[idx[b]] })
	var pos, neg, rankSum float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && p[idx[j]] == p[idx[i]] {
			j++
		}
		avgRank := float64(i+j+1) / 2 // ranks i+1..j averaged
		for k := i; k < j; k++ {
			if labels[idx[k]] == 1 {
				pos++
				rankSum += avgRank
			} else {
				neg++
			}
		}
		i = j
	}
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

// LogLoss is the mean binary cross-entropy with p clipped to [Clip, 1-Clip].
func LogLoss(labels []int, p []float64) float64 {
	if len(p) == 0 {
		return math.NaN()
	}
	var s float64
	for i, q := range p {
		q = math.Min(math.Max(q, Clip), 1-Clip)
		if labels[i] == 1 {
			s -= math.Log(q)
		} else {
			s -= math.Log(1 - q)
		}
	}
	return s / float64(len(p))
}

// Accuracy is the fraction of samples whose prediction (positive when
// p >= 0.5) equals the label.
func Accuracy(labels []int, p []float64) float64 {
	if len(p) == 0 {
		return math.NaN()
	}
	var ok int
	for i, q := range p {
		pred := 0
		if q >= 0.5 {
			pred = 1
		}
		if pred == labels[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(p))
}
