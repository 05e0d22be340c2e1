package data

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestPrepareCache(t *testing.T) {
	dir := t.TempDir()
	writeML1M(t, dir, tieUsers, tieMovies, tieRatings)
	opts := DefaultOptions()
	opts.Dir = dir
	opts.MinHistory = 1
	cache := filepath.Join(t.TempDir(), "cache")
	ctx := context.Background()

	ds1, rep1, hit, err := Prepare(ctx, opts, cache, nil)
	if err != nil || hit {
		t.Fatalf("first Prepare: hit %v err %v, want a fresh build", hit, err)
	}
	ds2, rep2, hit, err := Prepare(ctx, opts, cache, nil)
	if err != nil || !hit {
		t.Fatalf("second Prepare: hit %v err %v, want the cache", hit, err)
	}
	if !reflect.DeepEqual(ds1, ds2) || !reflect.DeepEqual(rep1, rep2) {
		t.Errorf("cached dataset or report differs from the built one")
	}

	// Options that do not decide the samples keep the cache.
	o2 := opts
	o2.HistoryLen, o2.MaxEvalSamples = 7, 3
	if _, _, hit, _ := Prepare(ctx, o2, cache, nil); !hit {
		t.Errorf("history_len/max_eval_samples change: cache not reused")
	}
	// Options that do, rebuild.
	o3 := opts
	o3.MinHistory = 2
	if ds3, _, hit, err := Prepare(ctx, o3, cache, nil); err != nil || hit || ds3.Stats() == ds1.Stats() {
		t.Errorf("min_history change: hit %v err %v stats %+v (was %+v), want a rebuild with other counts", hit, err, ds3.Stats(), ds1.Stats())
	}
	if _, _, hit, _ := Prepare(ctx, opts, cache, nil); hit {
		t.Errorf("back to min_history 1: cache (now for 2) reused")
	}

	// A changed input file rebuilds even with the same size and time.
	p := filepath.Join(dir, "ratings.dat")
	st, _ := os.Stat(p)
	b, _ := os.ReadFile(p)
	b[len(b)-2] ^= 1 // last digit of the last timestamp
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, st.ModTime(), st.ModTime())
	if _, _, hit, err := Prepare(ctx, opts, cache, nil); err != nil || hit {
		t.Errorf("changed ratings.dat: hit %v err %v, want a rebuild", hit, err)
	}

	// A damaged cache is rebuilt.
	if err := os.WriteFile(filepath.Join(cache, CacheFile), []byte("not a gob"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, hit, err := Prepare(ctx, opts, cache, nil); err != nil || hit {
		t.Errorf("damaged cache: hit %v err %v, want a rebuild", hit, err)
	}
	if _, _, hit, _ := Prepare(ctx, opts, cache, nil); !hit {
		t.Errorf("after rebuilding a damaged cache: not reused")
	}
}
