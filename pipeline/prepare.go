package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/data/synth"
)

// Prepare builds (or reuses from the cache) the dataset's samples and writes
// OUTPUT_DIR/data/stats.json and report.json. With generate.data it first
// writes the synthetic dataset into data.dir when that folder is missing.
func (r *Runner) Prepare(ctx context.Context) (*data.Dataset, error) {
	c := r.Cfg
	if c.Generate.Data {
		if err := r.generateData(); err != nil {
			return nil, err
		}
	}
	ds, rep, cached, err := data.Prepare(ctx, c.Data, r.path("data"), r.Log)
	if err != nil {
		return nil, err
	}
	if err := writeJSON(r.path("data", "stats.json"), ds.Stats()); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if rep != nil {
		r.fp.data = rep.Fingerprint
		if err := writeJSON(r.path("data", "report.json"), rep); err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
	}
	st := ds.Stats()
	r.Log.Info("prepare: done", "dataset", c.Data.Dataset, "from_cache", cached,
		"train", st.Train, "valid", st.Valid, "test", st.Test, "users", st.Users, "items", st.Items)
	return ds, nil
}

// generateData writes the project's synthetic ML-1M-format dataset into
// data.dir unless the folder already holds one.
func (r *Runner) generateData() error {
	c := r.Cfg
	if c.Data.Dataset != data.ML1M {
		return fmt.Errorf("generate.data: synthetic data is made in the ml-1m format only, but data.dataset is %q", c.Data.Dataset)
	}
	if _, err := os.Stat(filepath.Join(c.Data.Dir, "ratings.dat")); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("generate.data: %w", err)
	}
	o := synth.DefaultOptions()
	o.Users, o.Items, o.Seed = c.Generate.DataUsers, c.Generate.DataItems, c.Seed
	r.Log.Info("prepare: writing the synthetic dataset", "dir", c.Data.Dir, "users", o.Users, "items", o.Items)
	if err := synth.WriteML1M(c.Data.Dir, o); err != nil {
		return fmt.Errorf("generate.data: %w", err)
	}
	return nil
}
