package baseline

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/data/synth"
	"github.com/rella-project/rella/metrics"
)

var (
	synthOnce sync.Once
	synthDS   *data.Dataset
	synthErr  error
)

// synthML1M loads the project's synthetic ML-1M (planted signal: popular
// genres liked by all, one favourite niche genre per user), 400 users.
func synthML1M(t *testing.T) *data.Dataset {
	t.Helper()
	synthOnce.Do(func() {
		dir := filepath.Join(t.TempDir(), "ml-1m")
		o := synth.DefaultOptions()
		o.Users, o.Items, o.Seed = 400, 200, 3
		if synthErr = synth.WriteML1M(dir, o); synthErr != nil {
			return
		}
		opts := data.DefaultOptions()
		opts.Dir = dir
		synthDS, _, synthErr = data.Load(context.Background(), opts, nil)
	})
	if synthErr != nil {
		t.Fatal(synthErr)
	}
	return synthDS
}

// smallConfig is a quick configuration for the synthetic data.
func smallConfig(model string) configs.Baseline {
	c := configs.DefaultBaseline()
	c.Model = model
	c.EmbeddingSize = 8
	c.Hidden = []int{32, 16}
	c.AttentionHidden = []int{16, 8}
	c.CrossLayers = 2
	c.HistoryLen = 10
	c.RetrievalSize = 5
	c.BatchSize = 128
	c.Epochs = 4
	c.Patience = 2
	c.LearningRate = 3e-3
	return c
}

// TestModelsLearnThePlantedSignal trains every model on the synthetic data
// and requires a test AUC well above chance; a second run with the same
// seed must give the very same predictions.
func TestModelsLearnThePlantedSignal(t *testing.T) {
	ds := synthML1M(t)
	for _, name := range configs.BaselineModels {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			cfg := smallConfig(name)
			m, err := Train(ctx, ds, cfg, Options{Seed: 5, SampleSeed: 42})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			p, err := m.Predict(ctx, ds.Test)
			if err != nil {
				t.Fatal(err)
			}
			res := metrics.Compute(labels(ds.Test), p)
			t.Logf("%s: test %+v (best epoch %d of %d)", name, res, m.BestEpoch, len(m.Epochs))
			if res.AUC < 0.65 {
				t.Errorf("%s: test AUC %.4f, want >= 0.65 (the planted signal; chance is 0.5)", name, res.AUC)
			}
			m2, err := Train(ctx, ds, cfg, Options{Seed: 5, SampleSeed: 42})
			if err != nil {
				t.Fatal(err)
			}
			defer m2.Close()
			p2, err := m2.Predict(ctx, ds.Test)
			if err != nil {
				t.Fatal(err)
			}
			for i := range p {
				if p[i] != p2[i] {
					t.Fatalf("%s: same seed, prediction %d differs: %v vs %v", name, i, p[i], p2[i])
				}
			}
		})
	}
}
