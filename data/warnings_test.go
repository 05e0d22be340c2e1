package data

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/text/encoding/charmap"

	"github.com/rella-project/rella/internal/testenv"
)

func logTo(b *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// issue 11 item 10: a malformed line's error says how to skip such lines;
// skipped lines are a warning with their count.
func TestMalformedHintAndSkipWarning(t *testing.T) {
	dir := t.TempDir()
	writeML1M(t, dir, tieUsers, tieMovies, tieRatings+"349::9::4\n"+"349::9::x::5\n")
	_, _, err := loadDir(t, ML1M, dir, false)
	wantErr(t, err, "ratings.dat:7:", "data.skip_malformed")

	var log bytes.Buffer
	opts := DefaultOptions()
	opts.Dir, opts.SkipMalformed, opts.MinHistory = dir, true, 0
	if _, _, err := Load(context.Background(), opts, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "skipped malformed lines") || !strings.Contains(log.String(), "count=2") {
		t.Errorf("no warning with the count of skipped lines:\n%s", log.String())
	}
}

// issue 11 item 10: many ratings of unknown users or items are a warning;
// a clean file gives none.
func TestManyUnknownIDsWarn(t *testing.T) {
	dir := t.TempDir()
	writeML1M(t, dir, tieUsers, tieMovies, tieRatings+"777::9::4::400\n"+"349::12345::3::500\n")
	var log bytes.Buffer
	opts := DefaultOptions()
	opts.Dir, opts.MinHistory = dir, 0
	_, rep, err := Load(context.Background(), opts, logTo(&log))
	if err != nil {
		t.Fatal(err)
	}
	if rep.UnknownUsers != 1 || rep.UnknownItems != 1 {
		t.Fatalf("unknown users %d items %d, want 1 and 1", rep.UnknownUsers, rep.UnknownItems)
	}
	for _, w := range []string{"many ratings name users missing", "many ratings name items missing", "user 777", "movie 12345"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
	log.Reset()
	clean := t.TempDir()
	writeML1M(t, clean, tieUsers, tieMovies, tieRatings)
	opts.Dir = clean
	if _, _, err := Load(context.Background(), opts, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "level=WARN") {
		t.Errorf("clean files gave a warning:\n%s", log.String())
	}
}

// issue 11 item 10: BookCrossing files already converted to UTF-8 read
// like the cp1252 originals (with a warning), not decoded twice.
func TestBookCrossingConvertedToUTF8(t *testing.T) {
	header := `"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"` + "\r\n"
	book := `"0000000001";"Caf` + "\xe9" + ` au lait ` + "\x96" + ` na` + "\xef" + `ve";"Ren` + "\xe9" + `e";"2001";"P";"s";"m";"l"` + "\r\n"
	dir := t.TempDir()
	cp := filepath.Join(dir, "cp1252.csv")
	utf := filepath.Join(dir, "utf8.csv")
	writeFiles(t, dir, map[string]string{"cp1252.csv": header + book})
	conv, err := charmap.Windows1252.NewDecoder().String(header + book)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"utf8.csv": conv})
	opts := DefaultOptions()
	opts.Dataset = BookCrossing
	a, _, err := readBXBooks(context.Background(), cp, opts, &Report{})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := readBXBooks(context.Background(), utf, opts, &Report{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 1 || a[0].Title != "Café au lait – naïve" || a[0].Author != "Renée" {
		t.Fatalf("cp1252 original read as %+v", a)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("the UTF-8 copy reads as %+v, the cp1252 original as %+v", b, a)
	}

	// The shared sample (cp1252 originals) and its UTF-8 conversion give
	// the same dataset; the conversion is read with a warning per file.
	src := testenv.Shared(t, "data/bookcrossing-sample")
	conv8 := t.TempDir()
	for _, f := range InputFiles(Options{Dataset: BookCrossing, Dir: src}) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if isConvertedUTF8(raw) {
			t.Fatalf("%s: the cp1252 original is taken for UTF-8", f)
		}
		u, err := charmap.Windows1252.NewDecoder().Bytes(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(conv8, filepath.Base(f)), u, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts.Dir = src
	want, _, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	opts.Dir = conv8
	got, rep, err := Load(context.Background(), opts, logTo(&log))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Error("the UTF-8 conversion of the sample gives another dataset than the cp1252 original")
	}
	for _, f := range rep.Files {
		if f.Encoding != "utf-8" {
			t.Errorf("%s: encoding %q, want utf-8", f.Path, f.Encoding)
		}
	}
	if n := strings.Count(log.String(), "already UTF-8"); n != 3 {
		t.Errorf("%d UTF-8 warnings, want one per file:\n%s", n, log.String())
	}
}
