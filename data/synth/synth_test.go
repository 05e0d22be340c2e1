package synth

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/tokenizer"
)

// writers lists every writer with the files it produces.
var writers = []struct {
	kind  data.Kind
	write func(string, Options) error
	files []string
}{
	{data.ML1M, WriteML1M, []string{"users.dat", "movies.dat", "ratings.dat"}},
	{data.ML25M, WriteML25M, []string{"movies.csv", "ratings.csv"}},
	{data.BookCrossing, WriteBookCrossing, []string{"BX-Users.csv", "BX-Books.csv", "BX-Book-Ratings.csv"}},
}

func readAll(t *testing.T, dir string, files []string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestDeterministic(t *testing.T) {
	for _, w := range writers {
		t.Run(string(w.kind), func(t *testing.T) {
			o := DefaultOptions()
			a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
			if err := w.write(a, o); err != nil {
				t.Fatal(err)
			}
			if err := w.write(b, o); err != nil {
				t.Fatal(err)
			}
			o.Seed = 2
			if err := w.write(c, o); err != nil {
				t.Fatal(err)
			}
			fa, fb, fc := readAll(t, a, w.files), readAll(t, b, w.files), readAll(t, c, w.files)
			for i, name := range w.files {
				if len(fa[i]) == 0 {
					t.Errorf("%s is empty", name)
				}
				if !bytes.Equal(fa[i], fb[i]) {
					t.Errorf("%s: same seed, different bytes", name)
				}
				if bytes.Equal(fa[i], fc[i]) {
					t.Errorf("%s: seeds 1 and 2 wrote the same bytes", name)
				}
			}
			// Rewriting over existing files replaces them.
			if err := w.write(a, o); err != nil {
				t.Fatal(err)
			}
			for i, got := range readAll(t, a, w.files) {
				if !bytes.Equal(got, fc[i]) {
					t.Errorf("%s: rewriting with seed 2 did not replace the file", w.files[i])
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	bad := []Options{
		{Users: 0, Items: 150, MinRatings: 20, MaxRatings: 40},
		{Users: 10, Items: 5, MinRatings: 1, MaxRatings: 5},
		{Users: 10, Items: 150, MinRatings: 0, MaxRatings: 40},
		{Users: 10, Items: 150, MinRatings: 30, MaxRatings: 20},
		{Users: 10, Items: 30, MinRatings: 20, MaxRatings: 40},
	}
	for _, o := range bad {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
		if err := WriteML1M(t.TempDir(), o); err == nil {
			t.Errorf("WriteML1M %+v: no error", o)
		}
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	// Every rating of every item: n == Items is allowed.
	o := Options{Users: 3, Items: 12, MinRatings: 12, MaxRatings: 12, Seed: 5}
	dir := t.TempDir()
	if err := WriteML1M(dir, o); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(readAll(t, dir, []string{"ratings.dat"})[0]), "\n"); got != 36 {
		t.Errorf("ratings.dat has %d lines, want 36", got)
	}
}

// TestVocabulary checks that title words tell the genre: no word belongs to
// two signal genres (or two book categories), and none is a Latin word.
func TestVocabulary(t *testing.T) {
	for _, set := range [][numSignal]signalGenre{movieGenres, bookCategories} {
		owner := make(map[string]string)
		for _, g := range set {
			for _, w := range g.words {
				if o, ok := owner[w]; ok {
					t.Errorf("word %q in %s and %s", w, o, g.name)
				}
				owner[w] = g.name
			}
		}
		for _, w := range latinWords {
			if _, ok := owner[w]; ok {
				t.Errorf("latin word %q is a genre word", w)
			}
		}
	}
}

// TestMovieWordsArePieces checks the promise of the package comment with
// the real LLaMA tokenizer: every movie title word is one piece after a
// space, so that a title's genre is a short cue in a prompt.
func TestMovieWordsArePieces(t *testing.T) {
	tok, err := tokenizer.Load(testenv.Shared(t, "fixtures/tokenizer/llama"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range movieGenres {
		for _, w := range g.words {
			if _, ok := tok.PieceID("\u2581" + w); !ok {
				t.Errorf("%s word %q is not a single piece", g.name, w)
			}
			if ids := tok.Encode("Movie: "+w, false); len(ids) != len(tok.Encode("Movie:", false))+1 {
				t.Errorf("%s word %q encodes to %d pieces after a space, want 1", g.name, w, len(ids)-len(tok.Encode("Movie:", false)))
			}
		}
	}
}

func loadSynth(t *testing.T, kind data.Kind, dir string) (*data.Dataset, *data.Report) {
	t.Helper()
	opts := data.DefaultOptions()
	opts.Dataset, opts.Dir, opts.HistoryLen = kind, dir, 5
	ds, rep, err := data.Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatalf("data.Load %s: %v", kind, err)
	}
	return ds, rep
}

// checkMovieLens compares what the real reader made of the files with the
// generated world: titles (decoded), first genres, each user's ratings, the
// sample count and the labels.
func checkMovieLens(t *testing.T, w movieWorld, o Options, ds *data.Dataset) {
	t.Helper()
	byID := make(map[string]movie)
	for _, m := range w.movies {
		byID[itoa(m.id)] = m
	}
	for _, it := range ds.Items {
		m, ok := byID[it.ID]
		if !ok {
			t.Fatalf("reader has movie %s, the world has none", it.ID)
		}
		if it.Title != m.title || it.Genre != m.genres[0] {
			t.Errorf("movie %s: read %q %q, wrote %q %q", it.ID, it.Title, it.Genre, m.title, m.genres[0])
		}
	}
	if len(ds.Users) != len(w.users) {
		t.Fatalf("%d users read, %d written", len(ds.Users), len(w.users))
	}
	want := make(map[string][]string)
	samples := 0
	for _, rs := range byUser(w.ratings) {
		id := itoa(w.users[rs[0].user].id)
		for _, r := range rs {
			want[id] = append(want[id], itoa(w.movies[r.movie].id)+"@"+ftoa(r.rating))
		}
		if len(rs) > 5 {
			samples += len(rs) - 5
		}
	}
	for u, seq := range ds.Seqs {
		var got []string
		for i, e := range seq {
			got = append(got, ds.Items[e.Item].ID+"@"+ftoa(e.Rating))
			if i > 0 && e.Time < seq[i-1].Time {
				t.Errorf("user %s: time goes back at %d", ds.Users[u].ID, i)
			}
		}
		sort.Strings(got)
		exp := want[ds.Users[u].ID]
		sort.Strings(exp)
		if strings.Join(got, " ") != strings.Join(exp, " ") {
			t.Errorf("user %s: read %v, wrote %v", ds.Users[u].ID, got, exp)
		}
	}
	n := 0
	for _, split := range [][]data.Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			n++
			r := ds.Seqs[s.User][s.Pos].Rating
			if (r > 3) != (s.Label == 1) {
				t.Errorf("sample %+v: rating %v, label %d", s, r, s.Label)
			}
		}
	}
	if n != samples {
		t.Errorf("%d samples, want %d", n, samples)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func ftoa(f float32) string { return strconv.FormatFloat(float64(f), 'f', 1, 32) }

func TestML1MReadable(t *testing.T) {
	o := DefaultOptions()
	dir := t.TempDir()
	if err := WriteML1M(dir, o); err != nil {
		t.Fatal(err)
	}
	ds, rep := loadSynth(t, data.ML1M, dir)
	checkMovieLens(t, genMovieWorld(o, false), o, ds)
	if rep.UnknownUsers != 0 || rep.UnknownItems != 0 {
		t.Errorf("report: %d unknown users, %d unknown items", rep.UnknownUsers, rep.UnknownItems)
	}
	// The profile fields decode to the prompts' texts.
	for _, u := range ds.Users {
		if (u.Gender != "male" && u.Gender != "female") || u.Age == "" || u.Occupation == "" {
			t.Fatalf("user %+v: profile not decoded", u)
		}
	}
	// Non-ASCII ISO-8859-1 titles and apostrophes are present and read.
	var latin, apos int
	for _, it := range ds.Items {
		if strings.ContainsAny(it.Title, "éñëÜçäÅöí") {
			latin++
		}
		if strings.Contains(it.Title, "'") {
			apos++
		}
	}
	if latin == 0 || apos == 0 {
		t.Errorf("%d titles with Latin-1 letters, %d with apostrophes; want some of each", latin, apos)
	}
	raw := readAll(t, dir, []string{"movies.dat", "ratings.dat"})
	if utf8.Valid(raw[0]) {
		t.Error("movies.dat is valid UTF-8: it should be ISO-8859-1 with some non-ASCII letters")
	}
	// Same-second ties, and ratings.dat not in time order within users.
	ties, backwards := 0, 0
	for _, seq := range ds.Seqs {
		for i := 1; i < len(seq); i++ {
			if seq[i].Time == seq[i-1].Time {
				ties++
			}
		}
	}
	lines := strings.Split(strings.TrimSpace(string(raw[1])), "\n")
	for i := 1; i < len(lines); i++ {
		a, b := strings.Split(lines[i-1], "::"), strings.Split(lines[i], "::")
		if a[0] == b[0] && a[3] > b[3] {
			backwards++
		}
	}
	if ties == 0 || backwards == 0 {
		t.Errorf("%d same-second ties, %d time reversals in ratings.dat; want some of each", ties, backwards)
	}
}

// TestML1MSignal measures the planted signal on what the reader loaded:
// the positive rate by the target's genre, and the AUC of two predictors
// that see only what a prompt shows: the target's genre alone, and the
// target's genre with the K = 5 most recent history items.
func TestML1MSignal(t *testing.T) {
	o := DefaultOptions()
	dir := t.TempDir()
	if err := WriteML1M(dir, o); err != nil {
		t.Fatal(err)
	}
	ds, _ := loadSynth(t, data.ML1M, dir)
	w := genMovieWorld(o, false)
	fav := make(map[string]string)
	for _, u := range w.users {
		fav[itoa(u.id)] = movieGenres[u.fav].name
	}
	popular := make(map[string]bool)
	for _, g := range movieGenres[:numPopular] {
		popular[g.name] = true
	}
	type rate struct{ pos, n int }
	var pop, favR, niche rate
	var labels []int
	var genreOnly, withHistory []float64
	for _, split := range [][]data.Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			seq := ds.Seqs[s.User]
			g := ds.Items[seq[s.Pos].Item].Genre
			r := &niche
			switch {
			case popular[g]:
				r = &pop
			case g == fav[ds.Users[s.User].ID]:
				r = &favR
			}
			r.n++
			r.pos += int(s.Label)
			labels = append(labels, int(s.Label))
			// Scores from what a prompt shows: the target's genre is popular;
			// the target's genre was rated above 3 among the last five items.
			pg, seen := 0.0, 0.0
			if popular[g] {
				pg = 1
			}
			for _, e := range seq[max(0, int(s.Pos)-5):s.Pos] {
				if ds.Items[e.Item].Genre == g && e.Rating > 3 {
					seen = 1
				}
			}
			genreOnly = append(genreOnly, pg)
			withHistory = append(withHistory, 2*pg+seen)
		}
	}
	frac := func(r rate) float64 { return float64(r.pos) / float64(r.n) }
	aucG, aucH := metrics.AUC(labels, genreOnly), metrics.AUC(labels, withHistory)
	t.Logf("positive rate by target genre: popular %.3f (%d samples), favourite %.3f (%d), other niche %.3f (%d); AUC genre only %.3f, genre and 5 recent items %.3f",
		frac(pop), pop.n, frac(favR), favR.n, frac(niche), niche.n, aucG, aucH)
	if frac(pop) < 0.8 || frac(favR) < 0.8 || frac(niche) > 0.2 {
		t.Errorf("planted signal too weak")
	}
	if aucG < 0.68 || aucH < 0.78 || aucH < aucG+0.05 {
		t.Errorf("AUC genre only %.3f (want >= 0.68), with history %.3f (want >= 0.78 and 0.05 above)", aucG, aucH)
	}
	if len(labels) < 1000 {
		t.Errorf("%d samples; the quickstart size should give over 1000", len(labels))
	}
}

func TestML25MReadable(t *testing.T) {
	o := DefaultOptions()
	dir := t.TempDir()
	if err := WriteML25M(dir, o); err != nil {
		t.Fatal(err)
	}
	ds, rep := loadSynth(t, data.ML25M, dir)
	checkMovieLens(t, genMovieWorld(o, true), o, ds)
	if rep.UnknownItems != 0 {
		t.Errorf("report: %d unknown items", rep.UnknownItems)
	}
	var comma, quote, nonLatin, halves int
	for _, it := range ds.Items {
		comma += strings.Count(it.Title, ",")
		quote += strings.Count(it.Title, `"`)
		if strings.Contains(it.Title, "Ż") {
			nonLatin++
		}
	}
	for _, seq := range ds.Seqs {
		for _, e := range seq {
			if e.Rating != float32(int(e.Rating)) {
				halves++
			}
		}
	}
	if comma == 0 || quote == 0 || nonLatin == 0 || halves == 0 {
		t.Errorf("titles with commas %d, quotes %d, non-Latin-1 %d; half stars %d: want some of each", comma, quote, nonLatin, halves)
	}
}

// TestBookCrossingFormat parses the three files independently of package
// data: CRLF lines, quoted fields (NULL ages unquoted), Windows-1252, and
// compares them with the generated world.
func TestBookCrossingFormat(t *testing.T) {
	o := DefaultOptions()
	dir := t.TempDir()
	if err := WriteBookCrossing(dir, o); err != nil {
		t.Fatal(err)
	}
	w := genBookWorld(o)
	raw := readAll(t, dir, []string{"BX-Users.csv", "BX-Books.csv", "BX-Book-Ratings.csv"})
	decode := func(b []byte) string {
		var sb strings.Builder
		for _, c := range b {
			switch {
			case c >= 0x80 && c < 0xa0:
				r := cp1252High[c-0x80]
				if r == 0 {
					t.Fatalf("undefined Windows-1252 byte %#x", c)
				}
				sb.WriteRune(r)
			default:
				sb.WriteRune(rune(c))
			}
		}
		return sb.String()
	}
	rows := func(b []byte, header string, nfields int, re *regexp.Regexp) [][]string {
		if !bytes.HasSuffix(b, []byte("\r\n")) {
			t.Fatal("file does not end with CRLF")
		}
		lines := strings.Split(strings.TrimSuffix(decode(b), "\r\n"), "\r\n")
		if lines[0] != header {
			t.Fatalf("header %q, want %q", lines[0], header)
		}
		var out [][]string
		for i, l := range lines[1:] {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("line %d: stray line break", i+2)
			}
			if !re.MatchString(l) {
				t.Fatalf("line %d %q does not match %s", i+2, l, re)
			}
			// Split on `";"` as the authors do (titles hold "&amp;").
			if strings.HasSuffix(l, ";NULL") {
				l = strings.TrimSuffix(l, "NULL") + `"NULL"`
			}
			f := strings.Split(l[1:len(l)-1], `";"`)
			if len(f) != nfields {
				t.Fatalf("line %d: %d fields, want %d", i+2, len(f), nfields)
			}
			out = append(out, f)
		}
		return out
	}
	users := rows(raw[0], `"User-ID";"Location";"Age"`, 3, regexp.MustCompile(`^"[^"]*";"([^"]|\\")*";(NULL|"\d+")$`))
	books := rows(raw[1], `"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"`, 8, regexp.MustCompile(`^"[^"]*";"([^"]|\\")*";"[^"]*";"[^"]*";"[^"]*";"http[^"]*THUMBZZZ\.jpg";"[^"]*";"[^"]*"$`))
	ratings := rows(raw[2], `"User-ID";"ISBN";"Book-Rating"`, 3, regexp.MustCompile(`^"[^"]*";"[^"]*";"\d+"$`))
	if len(users) != len(w.users) || len(books) != len(w.books) || len(ratings) != len(w.ratings) {
		t.Fatalf("rows: %d users, %d books, %d ratings; world %d, %d, %d", len(users), len(books), len(ratings), len(w.users), len(w.books), len(w.ratings))
	}
	var nulls, entities, escQuotes, curly int
	for i, u := range users {
		if u[0] != itoa(w.users[i].id) || u[1] != w.users[i].location || u[2] != w.users[i].age {
			t.Errorf("user row %d: %q, world %+v", i, u, w.users[i])
		}
		if u[2] == "NULL" {
			nulls++
		}
	}
	for i, b := range books {
		wb := w.books[i]
		if b[0] != wb.isbn || b[1] != wb.title || b[2] != wb.author || b[3] != wb.year || b[4] != wb.publisher {
			t.Errorf("book row %d: %q, world %+v", i, b[:5], wb)
		}
		entities += strings.Count(b[1]+b[4], "&amp;")
		escQuotes += strings.Count(b[1], `\"`)
		curly += strings.Count(b[1], "\u2019")
	}
	for i, r := range ratings {
		wr := w.ratings[i]
		if r[0] != itoa(w.users[wr.user].id) || r[1] != wr.isbn || r[2] != itoa(wr.rating) {
			t.Errorf("rating row %d: %q, world %+v", i, r, wr)
		}
	}
	if nulls == 0 || entities == 0 || escQuotes == 0 || curly == 0 {
		t.Errorf("NULL ages %d, &amp; %d, \\\" %d, Windows-1252 quotes %d: want some of each", nulls, entities, escQuotes, curly)
	}
}

// TestBookCrossingReadable loads the files with the real reader and
// compares users, books, sequences and labels with the generated world.
func TestBookCrossingReadable(t *testing.T) {
	o := DefaultOptions()
	dir := t.TempDir()
	if err := WriteBookCrossing(dir, o); err != nil {
		t.Fatal(err)
	}
	ds, rep := loadSynth(t, data.BookCrossing, dir)
	w := genBookWorld(o)
	if rep.BadISBNs != 1 {
		t.Errorf("report: %d bad ISBNs, want 1", rep.BadISBNs)
	}
	books := make(map[string]book)
	for _, b := range w.books {
		books[b.isbn] = b
	}
	unknownIfNA := func(s string) string {
		if s == "n/a" {
			return "unknown"
		}
		return s
	}
	for _, it := range ds.Items {
		b, ok := books[it.ID]
		if !ok || b.invalidISBN {
			t.Fatalf("reader kept book %q", it.ID)
		}
		year := b.year
		if len(year) != 4 {
			year = "unknown"
		}
		if it.Title != b.title || it.Author != unknownIfNA(b.author) || it.Year != year || it.Publisher != unknownIfNA(b.publisher) {
			t.Errorf("book %s: read %q / %q / %q / %q, wrote %q / %q / %q / %q", it.ID,
				it.Title, it.Author, it.Year, it.Publisher, b.title, b.author, b.year, b.publisher)
		}
	}
	wantSeq := make(map[string][]string)
	for _, r := range w.ratings {
		if r.known {
			id := itoa(w.users[r.user].id)
			wantSeq[id] = append(wantSeq[id], r.isbn+"@"+itoa(r.rating))
		}
	}
	withSample := 0
	for _, s := range wantSeq {
		if len(s) > 5 {
			withSample++
		}
	}
	if n := len(ds.Train) + len(ds.Valid) + len(ds.Test); n != withSample || len(ds.Users) != withSample {
		t.Errorf("%d samples and %d users, want %d", n, len(ds.Users), withSample)
	}
	wUser := make(map[string]bxUser)
	for _, u := range w.users {
		wUser[itoa(u.id)] = u
	}
	for u, seq := range ds.Seqs {
		id := ds.Users[u].ID
		var got []string
		for _, e := range seq {
			got = append(got, ds.Items[e.Item].ID+"@"+ftoa(e.Rating))
		}
		exp := append([]string(nil), wantSeq[id]...)
		for i := range exp {
			exp[i] += ".0"
		}
		sort.Strings(got)
		sort.Strings(exp)
		if strings.Join(got, " ") != strings.Join(exp, " ") {
			t.Errorf("user %s: read %v, wrote %v", id, got, exp)
		}
		wu := wUser[id]
		switch wu.age {
		case "NULL", "0", "150":
			if ds.Users[u].Age != "unknown" {
				t.Errorf("user %s: age %q read as %q, want unknown", id, wu.age, ds.Users[u].Age)
			}
		}
		wantLoc := map[string]string{"nyc, new york, usa": "USA", "seattle, washington, u s a": "USA",
			"portland, oregon, us": "USA", "münchen, bayern, germany": "Germany", "?, ?, ?": "unknown"}[wu.location]
		if wantLoc != "" && ds.Users[u].Location != wantLoc {
			t.Errorf("user %s: location %q read as %q, want %q", id, wu.location, ds.Users[u].Location, wantLoc)
		}
	}
	for _, split := range [][]data.Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			r := ds.Seqs[s.User][s.Pos].Rating
			if (r >= 5) != (s.Label == 1) {
				t.Errorf("sample %+v: rating %v, label %d", s, r, s.Label)
			}
		}
	}
}
