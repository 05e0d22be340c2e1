package data

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	// Counts from a plain Python pass over the files (users and books as
	// keys, ratings joined on them): 297 users have kept ratings, 240 of
	// them 5 or fewer.
	got := []int{rep.UsersRead, rep.ItemsRead, rep.RatingsRead, rep.UnknownUsers, rep.UnknownItems, rep.FewRatingsUsers, rep.Samples}
	want := []int{1000, 9830, 69299, 66791, 930, 240, 57}
	if !slices.Equal(got, want) {
		t.Errorf("users, books, ratings, unknown users, unknown books, few-ratings users, samples: got %v, want %v", got, want)
	}
	// The authors' split of 57 is 51/6; valid is the last 5 (57/10) of the 51.
	if st := ds.Stats(); st.Train != 46 || st.Valid != 5 || st.Test != 6 || st.Users != 57 {
		t.Errorf("stats %+v, want train 46 valid 5 test 6 users 57", st)
	}
	for _, f := range rep.Files {
		if f.Malformed != 0 {
			t.Errorf("%s: %d malformed records: %q", f.Path, f.Malformed, f.MalformedExamples)
		}
	}
}

// TestBookCrossingMatchesReference compares the reader with
// testdata/bx_expected.txt, written by testdata/bx_reference.py (a plain
// Python rendering of the authors' preprocessing, using Python's own random)
// from the shared sample.
func TestBookCrossingMatchesReference(t *testing.T) {
	compareBXReference(t, testenv.Shared(t, "data/bookcrossing-sample"), "testdata/bx_expected.txt", 1000)
}

// TestBookCrossingAwkwardFormat reads hand-made files with every awkward case
// of the format (see testdata/bx_awkward_gen.py) and compares with the Python
// reference's output for them.
func TestBookCrossingAwkwardFormat(t *testing.T) {
	compareBXReference(t, "testdata/bx-awkward", "testdata/bx-awkward.expected", 17)
	opts := DefaultOptions()
	opts.Dataset, opts.Dir = BookCrossing, "testdata/bx-awkward"
	_, rep, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.UnknownUsers != 1 || rep.UnknownItems != 2 || rep.BadISBNs != 1 || rep.FewRatingsUsers != 1 {
		t.Errorf("report: unknown users %d items %d, bad ISBNs %d, few-ratings users %d; want 1, 2, 1, 1",
			rep.UnknownUsers, rep.UnknownItems, rep.BadISBNs, rep.FewRatingsUsers)
	}
	if len(rep.UnknownUserExamples) != 1 || !strings.Contains(rep.UnknownUserExamples[0], `BX-Book-Ratings.csv:9: user "999"`) {
		t.Errorf("unknown user examples %q", rep.UnknownUserExamples)
	}
}

// compareBXReference loads the BookCrossing files in dir and compares them
// with the reference output in expected, which lists nUsers profiles.
func compareBXReference(t *testing.T, dir, expected string, nUsers int) {
	opts := DefaultOptions()
	opts.Dataset = BookCrossing
	opts.Dir = dir
	ds, rep, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(expected)
	if err != nil {
		t.Fatal(err)
	}
	// All profiles, not only those of users with a sample.
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
	seenUsers, nSamples := 0, 0
	for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		f := strings.Split(line, "\t")
		switch f[0] {
		case "user":
			seenUsers++
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
	if seenUsers != nUsers || nSamples != len(all) {
		t.Errorf("reference has %d users and %d samples, want %d users and our %d samples", seenUsers, nSamples, nUsers, len(all))
	}
}
