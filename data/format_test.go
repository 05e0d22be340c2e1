package data

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeFiles writes name -> content into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeML1M writes the three ML-1M files (contents given as Latin-1 bytes).
func writeML1M(t *testing.T, dir, users, movies, ratings string) {
	t.Helper()
	writeFiles(t, dir, map[string]string{"users.dat": users, "movies.dat": movies, "ratings.dat": ratings})
}

// A small ML-1M-format dataset with same-second ratings: users "2006" and
// "349" rate at the same time, and user 349 rates movies "10" and "9" at one
// second. As strings "2006" < "349" and "10" < "9".
const (
	tieUsers = "349::M::25::12::55455\n2006::F::35::0::12345\n"
	// Latin-1: 0xE9 is é.
	tieMovies = "9::Sudden Death (1995)::Action\n10::GoldenEye (1995)::Action|Adventure|Thriller\n" +
		"11::Am\xe9lie (2001)::Comedy|Romance\n"
	tieRatings = "349::11::4::100\n" +
		"2006::11::2::100\n" +
		"349::9::5::200\n" +
		"349::10::3::200\n" +
		"2006::9::4::300\n" +
		"349::11::1::300\n"
)

func TestML1MTieOrder(t *testing.T) {
	dir := t.TempDir()
	writeML1M(t, dir, tieUsers, tieMovies, tieRatings)
	opts := DefaultOptions()
	opts.Dir = dir
	opts.MinHistory = 0
	ds, rep, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	// All six ratings are samples (MinHistory 0); in the global order:
	// t=100: user "2006" before "349"; t=200: user 349's movie "10" before
	// "9"; t=300: "2006" before "349".
	want := []string{"2006/11/0", "349/11/0", "349/10/1", "349/9/2", "2006/9/1", "349/11/3"}
	var got []string
	for _, split := range [][]Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			got = append(got, fmt.Sprintf("%s/%s/%d", ds.Users[s.User].ID, ds.Items[ds.Target(s).Item].ID, s.Pos))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("global order: got %v, want %v", got, want)
	}
	// n = 6: train 4, valid 0, test 2.
	if st := ds.Stats(); st.Train != 4 || st.Valid != 0 || st.Test != 2 {
		t.Errorf("split %+v, want 4/0/2", st)
	}
	u := ds.Users[0]
	if u.ID != "349" || u.Gender != "male" || u.Age != "25-34" || u.Occupation != "programmer" {
		t.Errorf("user 349: %+v", u)
	}
	if u := ds.Users[1]; u.Gender != "female" || u.Age != "35-44" || u.Occupation != "other or not specified" {
		t.Errorf("user 2006: %+v", u)
	}
	titles := map[string]string{}
	for _, it := range ds.Items {
		titles[it.ID] = it.Title + "|" + it.Genre
	}
	if titles["11"] != "Amélie (2001)|Comedy" || titles["10"] != "GoldenEye (1995)|Action" {
		t.Errorf("items: %v", titles)
	}
	if rep.ShortHistory != 0 {
		t.Errorf("short history %d, want 0", rep.ShortHistory)
	}
	// Labels: rating > 3.
	for _, s := range append(append([]Sample{}, ds.Train...), ds.Test...) {
		if r := ds.Target(s).Rating; (r > 3) != (s.Label == 1) {
			t.Errorf("rating %g has label %d", r, s.Label)
		}
	}
}
