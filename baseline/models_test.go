package baseline

import (
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/tensor"

	"github.com/rella-project/rella/configs"
)

// TestModelGradientsFiniteDifferences checks each whole model's parameter
// gradients (custom ops and Gorgonia's matrix product, concatenation,
// reshape and element-wise ops together) against central finite
// differences of the float64 loss on a batch of synthetic samples, at a
// random subset of entries of every larger parameter and every entry of the small ones. Tolerances as in
// checkGradients; ReLU kinks are avoided by the tiny step (1e-6).
func TestModelGradientsFiniteDifferences(t *testing.T) {
	ds := synthML1M(t)
	const h, atol, rtol = 1e-6, 1e-6, 1e-4
	for _, name := range configs.BaselineModels {
		t.Run(name, func(t *testing.T) {
			cfg := smallConfig(name)
			cfg.EmbeddingSize, cfg.Hidden, cfg.AttentionHidden, cfg.HistoryLen, cfg.RetrievalSize = 3, []int{5}, []int{4, 3}, 4, 3
			f, err := NewFeatures(ds, ds.Train, cfg.HistoryLen)
			if err != nil {
				t.Fatal(err)
			}
			p := newParams(tensor.Float64, 1)
			n, err := newNet(name, f, cfg, p, 6, true)
			if err != nil {
				t.Fatal(err)
			}
			defer n.vm.Close()
			// Zero biases put ReLU inputs exactly at the kink (a row whose
			// hidden units are all off feeds the next layer its bias alone),
			// where finite differences average the two sides: start every
			// parameter off zero.
			noise := rand.New(rand.NewPCG(5, 6))
			for _, q := range p.List() {
				for j, w := range q.Value.Data().([]float64) {
					q.Value.Data().([]float64)[j] = w + 0.1*noise.NormFloat64()
				}
			}
			samples := ds.Train[len(ds.Train)-6:] // late samples: long histories (SIM retrieves from them)
			grads := make([][]float64, len(n.params))
			if _, err := n.step(f, p, samples, grads); err != nil {
				t.Fatal(err)
			}
			// Freeze SIM's retrieval at the analytic point: the search is
			// not differentiated (it is a selection).
			n.extra = nil
			loss := func() float64 {
				if err := f.Fill(n.bt, samples); err != nil {
					t.Fatal(err)
				}
				n.fillPositions()
				n.fillMean()
				defer n.vm.Reset()
				if err := n.vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				return scalarOf(n.loss.Value().Data())
			}
			rng := rand.New(rand.NewPCG(3, 4))
			checked := 0
			for i, q := range n.params {
				w := q.Value.Data().([]float64)
				var nonzero []int
				for j, g := range grads[i] {
					if g != 0 {
						nonzero = append(nonzero, j)
					}
				}
				if len(nonzero) == 0 {
					t.Errorf("%s: no gradient reaches it", q.Name)
				}
				picks := []int{rng.IntN(len(w))} // one anywhere (usually 0 in a table)
				if len(w) <= 64 {                // small tensors: every entry
					picks = picks[:0]
					for j := range w {
						picks = append(picks, j)
					}
				}
				for k := 0; k < 4 && len(nonzero) > 0; k++ {
					picks = append(picks, nonzero[rng.IntN(len(nonzero))])
				}
				for _, j := range picks {
					{
						x := w[j]
						w[j] = x + h
						up := loss()
						w[j] = x - h
						down := loss()
						w[j] = x
						num := (up - down) / (2 * h)
						if math.Abs(grads[i][j]-num) > atol+rtol*math.Abs(num) {
							t.Errorf("%s[%d]: analytic %.9g, finite differences %.9g", q.Name, j, grads[i][j], num)
						}
						checked++
					}
				}
			}
			t.Logf("%s: %d entries of %d parameters checked", name, checked, len(n.params))
		})
	}
}
