package data

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

func loadBXShared(t *testing.T) (*Dataset, *Report) {
	t.Helper()
	dir := testenv.Shared(t, "data/bookcrossing-sample")
	opts := DefaultOptions()
	opts.Dataset = BookCrossing
	opts.Dir = dir
	ds, rep, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ds, rep
}

func TestBookCrossingSharedSample(t *testing.T) {
	ds, rep := loadBXShared(t)
	t.Logf("stats %+v", ds.Stats())
	t.Logf("report users %d items %d ratings %d unknown users %d items %d few %d samples %d bad isbn %d", rep.UsersRead, rep.ItemsRead, rep.RatingsRead, rep.UnknownUsers, rep.UnknownItems, rep.FewRatingsUsers, rep.Samples, rep.BadISBNs)
	for _, f := range rep.Files {
		t.Logf("%+v", *f)
	}
}

// TestBookCrossingMatchesReference compares the reader with
// testdata/bx_expected.txt, written by testdata/bx_reference.py (a plain
// Python rendering of the authors' preprocessing, using Python's own random)
// from the shared sample.
func TestBookCrossingMatchesReference(t *testing.T) {
	ds, rep := loadBXShared(t)
	raw, err := os.ReadFile("testdata/bx_expected.txt")
	if err != nil {
		t.Fatal(err)
	}
	// All profiles, not only those of users with a sample.
	opts := DefaultOptions()
	opts.Dir = testenv.Shared(t, "data/bookcrossing-sample")
	profiles, _, err := readBXUsers(context.Background(), filepath.Join(opts.Dir, "BX-Users.csv"), opts, &Report{})
	if err != nil {
		t.Fatal(err)
	}
	users := make(map[string]User)
	for _, u := range profiles {
		users[u.ID] = u
	}
	books, _, err := readBXBooks(context.Background(), filepath.Join(opts.Dir, "BX-Books.csv"), opts, &Report{})
	if err != nil {
		t.Fatal(err)
	}
	byISBN := make(map[string]Item)
	for _, it := range books {
		byISBN[it.ID] = it
	}
	all := append(append(append([]Sample{}, ds.Train...), ds.Valid...), ds.Test...)
	nUsers, nSamples := 0, 0
	for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		f := strings.Split(line, "\t")
		switch f[0] {
		case "user":
			nUsers++
			if u := users[f[1]]; u.Location != f[2] || u.Age != f[3] {
				t.Errorf("user %s: got %q %q, want %q %q", f[1], u.Location, u.Age, f[2], f[3])
			}
		case "sample":
			i, _ := strconv.Atoi(f[1])
			if i >= len(all) {
				t.Fatalf("sample %d: only %d samples", i, len(all))
			}
			s := all[i]
			u := ds.Users[s.User]
			var seq []string
			for _, e := range ds.Seqs[s.User] {
				seq = append(seq, fmt.Sprintf("%s:%g", ds.Items[e.Item].ID, e.Rating))
			}
			if got := strings.Join(seq, ","); u.ID != f[2] || got != f[3] {
				t.Errorf("sample %d: got user %s %s, want %s %s", i, u.ID, got, f[2], f[3])
			}
			if int(s.Pos) != len(seq)-1 {
				t.Errorf("sample %d: pos %d, want the last of %d", i, s.Pos, len(seq))
			}
			last := ds.Seqs[s.User][s.Pos]
			if want := int8(0); (last.Rating >= 5) != (s.Label == 1) {
				t.Errorf("sample %d: label %d for rating %g (want %d when < 5)", i, s.Label, last.Rating, want)
			}
			nSamples++
		case "book":
			if it := byISBN[f[1]]; it.Title != f[2] || it.Author != f[3] || it.Year != f[4] || it.Publisher != f[5] {
				t.Errorf("book %s: got %q, want %q", f[1], []string{it.Title, it.Author, it.Year, it.Publisher}, f[2:])
			}
		default:
			// users N books N rated_users N samples N train N test N
			want := map[string]int{}
			for i := 0; i+1 < len(strings.Fields(line)); i += 2 {
				w := strings.Fields(line)
				want[w[i]], _ = strconv.Atoi(w[i+1])
			}
			if rep.UsersRead != want["users"] || rep.ItemsRead != want["books"] || rep.Samples != want["samples"] {
				t.Errorf("read %d users %d books %d samples, want %v", rep.UsersRead, rep.ItemsRead, rep.Samples, want)
			}
			if st := ds.Stats(); st.Train+st.Valid != want["train"] || st.Test != want["test"] {
				t.Errorf("splits %+v, want train+valid %d test %d", st, want["train"], want["test"])
			}
		}
	}
	if nUsers != 1000 || nSamples != len(all) {
		t.Errorf("reference has %d users and %d samples (we have %d samples)", nUsers, nSamples, len(all))
	}
}
