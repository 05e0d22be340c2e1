package data

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

func TestML1MSharedCounts(t *testing.T) {
	dir := testenv.Shared(t, "data/ml-1m")
	opts := DefaultOptions()
	opts.Dir = dir
	ds, rep, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := ds.Stats()
	if st.Train != 378124 || st.Valid != 47265 || st.Test != 47266 {
		t.Errorf("splits %d/%d/%d, want 378124/47265/47266", st.Train, st.Valid, st.Test)
	}
	if st.Users != 2999 {
		t.Errorf("users %d, want 2999", st.Users)
	}
	if rep.RatingsRead != 487650 || rep.UnknownUsers != 0 || rep.UnknownItems != 0 {
		t.Errorf("report: ratings %d unknown users %d items %d, want 487650, 0, 0", rep.RatingsRead, rep.UnknownUsers, rep.UnknownItems)
	}
	if rep.UsersRead != 6040 || rep.ItemsRead != 3883 {
		t.Errorf("read %d users %d movies, want 6040, 3883", rep.UsersRead, rep.ItemsRead)
	}
	// Digest of every sample as "user/movie/pos/label\n" in order, from a
	// plain Python sort of ratings.dat by (int(timestamp), user, movie) as
	// strings.
	h := sha256.New()
	for _, split := range [][]Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			fmt.Fprintf(h, "%s/%s/%d/%d\n", ds.Users[s.User].ID, ds.Items[ds.Target(s).Item].ID, s.Pos, s.Label)
		}
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), "8ea574109eb5c46c48f28fba879dcdfab9b77f10f4fab824319a2070da7b2514"; got != want {
		t.Errorf("samples digest %s, want %s", got, want)
	}
}

func TestML1MUsersKeepZip(t *testing.T) {
	dir := testenv.Shared(t, "data/ml-1m")
	opts := DefaultOptions()
	opts.Dir = dir
	ds, _, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	// users.dat line 1: 1::F::1::10::48067; line 2: 2::M::56::16::70072
	for i, want := range []string{"48067", "70072"} {
		if got := ds.Users[i].Zip; got != want {
			t.Errorf("user %s zip %q, want %q", ds.Users[i].ID, got, want)
		}
	}
}
