package data

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/pyrand"
)

// sampleKey describes a sample as (user id, movie id, rating, position).
type sampleKey struct {
	User, Item string
	Rating     float32
	Pos        int32
}

func keyOf(ds *Dataset, s Sample) sampleKey {
	e := ds.Target(s)
	return sampleKey{ds.Users[s.User].ID, ds.Items[e.Item].ID, e.Rating, s.Pos}
}

func TestML25MSharedSample(t *testing.T) {
	dir := testenv.Shared(t, "data/ml-25m-sample")
	opts := DefaultOptions()
	opts.Dataset = ML25M
	opts.Dir = dir
	ds, rep, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Expected values from a plain Python rendering of the rules (csv
	// module, sort by (int(ts), userId, movieId) as strings).
	if st := ds.Stats(); st != (Stats{Train: 7655, Valid: 956, Test: 958, Users: 74, Items: st.Items}) {
		t.Errorf("stats %+v, want train 7655 valid 956 test 958 users 74", st)
	}
	if rep.RatingsRead != 9939 || rep.UnknownItems != 0 || rep.ItemsRead != 62423 {
		t.Errorf("report: ratings %d unknown items %d movies %d, want 9939 0 62423", rep.RatingsRead, rep.UnknownItems, rep.ItemsRead)
	}
	checks := []struct {
		name string
		s    Sample
		want sampleKey
	}{
		{"last train", ds.Train[len(ds.Train)-1], sampleKey{"16", "26662", 3.5, 16}},
		{"first valid", ds.Valid[0], sampleKey{"16", "1961", 4, 17}},
		{"first test", ds.Test[0], sampleKey{"21", "65514", 4, 38}},
		{"last test", ds.Test[len(ds.Test)-1], sampleKey{"4", "1136", 4.5, 241}},
	}
	for _, c := range checks {
		if got := keyOf(ds, c.s); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
	// Digests of every sample as "user/movie/pos/label\n" in order, from
	// the Python rendering with the ids as numbers (the authors' ML-25M code)
	// and as strings.
	for _, c := range []struct {
		order, digest string
		positives     int
	}{
		{IDOrderAuto, "22831b90f77f438cdf61fa57c5fef9fbd04127da44d16d5fbf6639665471b23a", 6207},
		{IDOrderNumeric, "22831b90f77f438cdf61fa57c5fef9fbd04127da44d16d5fbf6639665471b23a", 6207},
		{IDOrderString, "fe2d30d7f28de56efa6e587d57e53bcfb69c9f1998c442130e82df9b3521d0ec", 6209},
	} {
		o := opts
		o.IDOrder = c.order
		d, _, err := Load(context.Background(), o, nil)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		pos := 0
		for _, split := range [][]Sample{d.Train, d.Valid, d.Test} {
			for _, s := range split {
				fmt.Fprintf(h, "%s/%s/%d/%d\n", d.Users[s.User].ID, d.Items[d.Target(s).Item].ID, s.Pos, s.Label)
				pos += int(s.Label)
			}
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != c.digest || pos != c.positives {
			t.Errorf("id_order %q: digest %s with %d positives, want %s with %d", c.order, got, pos, c.digest, c.positives)
		}
	}
	var title string
	for _, it := range ds.Items {
		if it.ID == "29" {
			title = it.Title
		}
	}
	if want := "City of Lost Children, The (Cité des enfants perdus, La) (1995)"; title != want {
		t.Errorf("movie 29: title %q, want %q", title, want)
	}

	// Subsampling draws like pandas: the rows permutation(len)[:n] of the
	// full split, in that order.
	opts.ML25MTestSamples, opts.ML25MTrainSamples = 50, 100
	sub, _, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		full, got []Sample
		n         int
	}{{"test", ds.Test, sub.Test, 50}, {"train", ds.Train, sub.Train, 100}} {
		rs, _ := pyrand.NewNumPy(42)
		perm := rs.Permutation(len(c.full))
		var want []sampleKey
		for _, i := range perm[:c.n] {
			want = append(want, keyOf(ds, c.full[i]))
		}
		var got []sampleKey
		for _, s := range c.got {
			got = append(got, keyOf(sub, s))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s subsample: got %v..., want %v...", c.name, got[:3], want[:3])
		}
	}
	if len(sub.Valid) != len(ds.Valid) {
		t.Errorf("valid: %d samples, want the whole split (%d)", len(sub.Valid), len(ds.Valid))
	}
}
