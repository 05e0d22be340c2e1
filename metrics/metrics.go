// Package metrics computes the CTR metrics ReLLa reports: AUC, log loss and
// accuracy (RELLA.md section 6).
package metrics

import (
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
