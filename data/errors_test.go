package data

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

func loadDir(t *testing.T, kind Kind, dir string, skip bool) (*Dataset, *Report, error) {
	t.Helper()
	opts := DefaultOptions()
	opts.Dataset, opts.Dir, opts.SkipMalformed = kind, dir, skip
	if kind != BookCrossing {
		opts.MinHistory = 0 // every rating is a sample in the small files
	}
	return Load(context.Background(), opts, nil)
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestMissingFile(t *testing.T) {
	for _, c := range []struct {
		kind    Kind
		present map[string]string
		missing string
	}{
		{ML1M, map[string]string{"users.dat": tieUsers, "ratings.dat": tieRatings}, "movies.dat"},
		{ML25M, map[string]string{"movies.csv": "movieId,title,genres\n"}, "ratings.csv"},
		{BookCrossing, map[string]string{"BX-Users.csv": `"User-ID";"Location";"Age"` + "\r\n"}, "BX-Books.csv"},
	} {
		dir := t.TempDir()
		writeFiles(t, dir, c.present)
		_, _, err := loadDir(t, c.kind, dir, false)
		wantErr(t, err, c.missing, "missing")
	}
}

func TestML1MMalformed(t *testing.T) {
	dir := t.TempDir()
	bad := tieRatings + "349::9::4\n" + "349::9::x::5\n" + "349::9::4::12::13\n"
	writeML1M(t, dir, tieUsers, tieMovies, bad)
	_, _, err := loadDir(t, ML1M, dir, false)
	wantErr(t, err, `data: ratings.dat:7: want 4 fields (UserID::MovieID::Rating::Timestamp) separated by "::", got 3`)

	ds, rep, err := loadDir(t, ML1M, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	f := rep.Files[2]
	if f.Malformed != 3 || len(f.MalformedExamples) != 3 || f.Records != 6 {
		t.Fatalf("ratings.dat report %+v, want 3 malformed and 6 records", *f)
	}
	for i, want := range []string{"ratings.dat:7: want 4 fields", `ratings.dat:8: rating "x"`, "ratings.dat:9: want 4 fields"} {
		if !strings.Contains(f.MalformedExamples[i], want) {
			t.Errorf("example %d: %q does not contain %q", i, f.MalformedExamples[i], want)
		}
	}
	if n := len(ds.Train) + len(ds.Valid) + len(ds.Test); n != 6 {
		t.Errorf("%d samples, want the 6 good ratings", n)
	}

	dir = t.TempDir()
	writeML1M(t, dir, "1::X::25::12::55455\n", tieMovies, tieRatings)
	_, _, err = loadDir(t, ML1M, dir, false)
	wantErr(t, err, `users.dat:1: gender "X"`)
	writeML1M(t, dir, "1::M::26::12::55455\n", tieMovies, tieRatings)
	_, _, err = loadDir(t, ML1M, dir, false)
	wantErr(t, err, `users.dat:1: age code "26"`)
	writeML1M(t, dir, "1::M::25::21::55455\n", tieMovies, tieRatings)
	_, _, err = loadDir(t, ML1M, dir, false)
	wantErr(t, err, `users.dat:1: occupation "21"`)
	writeML1M(t, dir, tieUsers, "9::Title\n", tieRatings)
	_, _, err = loadDir(t, ML1M, dir, false)
	wantErr(t, err, `movies.dat:1: want 3 fields`)
}

func TestML1MUnknownIDs(t *testing.T) {
	dir := t.TempDir()
	writeML1M(t, dir, tieUsers, tieMovies, tieRatings+"77::9::4::400\n349::4242::4::400\n")
	ds, rep, err := loadDir(t, ML1M, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.UnknownUsers != 1 || rep.UnknownItems != 1 ||
		rep.UnknownUserExamples[0] != "ratings.dat:7: user 77" || rep.UnknownItemExamples[0] != "ratings.dat:8: movie 4242" {
		t.Errorf("report: %d %q, %d %q", rep.UnknownUsers, rep.UnknownUserExamples, rep.UnknownItems, rep.UnknownItemExamples)
	}
	if rep.RatingsRead != 8 || rep.RatingsKept != 6 || len(ds.Train)+len(ds.Valid)+len(ds.Test) != 6 {
		t.Errorf("read %d kept %d ratings, want 8 and 6", rep.RatingsRead, rep.RatingsKept)
	}
}

const ml25mMovies = "movieId,title,genres\r\n" +
	"1,Toy Story (1995),Adventure|Animation\r\n" +
	"11,\"American President, The (1995)\",Comedy|Drama|Romance\r\n" +
	"29,\"City of Lost Children, The (Cité des enfants perdus, La) (1995)\",Adventure|Drama\r\n" +
	"31,\"\"\"Great Performances\"\" Cats (1998)\",Musical\r\n" +
	"40,Unrated (2019),(no genres listed)\r\n"

func TestML25MFormat(t *testing.T) {
	dir := t.TempDir()
	ratings := "userId,movieId,rating,timestamp\r\n" +
		"1,1,3.5,100\r\n1,11,4.0,50\r\n1,29,0.5,200\r\n2,31,3,100\r\n2,40,5.0,100\r\n1,40,3.0,100\r\n"
	writeFiles(t, dir, map[string]string{"movies.csv": ml25mMovies, "ratings.csv": ratings})
	ds, rep, err := loadDir(t, ML25M, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	titles := map[string]string{}
	for _, it := range ds.Items {
		titles[it.ID] = it.Title + "|" + it.Genre
	}
	for id, want := range map[string]string{
		"11": "American President, The (1995)|Comedy",
		"29": "City of Lost Children, The (Cité des enfants perdus, La) (1995)|Adventure",
		"31": `"Great Performances" Cats (1998)|Musical`,
		"40": "Unrated (2019)|(no genres listed)",
	} {
		if titles[id] != want {
			t.Errorf("movie %s: got %q, want %q", id, titles[id], want)
		}
	}
	if rep.ItemsRead != 5 || rep.RatingsRead != 6 {
		t.Errorf("read %d movies %d ratings, want 5 and 6", rep.ItemsRead, rep.RatingsRead)
	}
	// Order: t=50 (1,11); t=100: users "1" < "2", movies "1" < "40"; "31" < "40"; t=200.
	var got []string
	for _, split := range [][]Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			e := ds.Target(s)
			got = append(got, ds.Users[s.User].ID+"/"+ds.Items[e.Item].ID+"/"+strings.TrimRight(strings.TrimRight(fmtRating(e.Rating), "0"), "."))
		}
	}
	want := "1/11/4 1/1/3.5 1/40/3 2/31/3 2/40/5 1/29/0.5"
	if strings.Join(got, " ") != want {
		t.Errorf("order: got %q, want %q", strings.Join(got, " "), want)
	}

	bad := "movieId,title,genres\n1,Caf\xe9 (1995),Drama\n"
	writeFiles(t, dir, map[string]string{"movies.csv": bad})
	_, _, err = loadDir(t, ML25M, dir, false)
	wantErr(t, err, "movies.csv:2: not valid UTF-8")

	writeFiles(t, dir, map[string]string{"movies.csv": ml25mMovies, "ratings.csv": "userId,movieId,rating,timestamp\n1,1,3.5,100\n1,1,\xff,100\n"})
	_, _, err = loadDir(t, ML25M, dir, false)
	wantErr(t, err, "ratings.csv:3: not valid UTF-8")
	writeFiles(t, dir, map[string]string{"ratings.csv": "userId,movieId,rating,timestamp\n1,1,3.7,100\n"})
	_, _, err = loadDir(t, ML25M, dir, false)
	wantErr(t, err, `ratings.csv:2: rating "3.7"`)
	writeFiles(t, dir, map[string]string{"ratings.csv": "user,movie,rating,timestamp\n"})
	_, _, err = loadDir(t, ML25M, dir, false)
	wantErr(t, err, `ratings.csv:1: want the header`)
	writeFiles(t, dir, map[string]string{"movies.csv": "movieId,title,genres\n1,\"Unclosed (1995),Drama\n"})
	_, _, err = loadDir(t, ML25M, dir, false)
	wantErr(t, err, "movies.csv:2:")
}

func fmtRating(r float32) string { return strconv.FormatFloat(float64(r), 'f', 1, 32) }

func TestBookCrossingBadInput(t *testing.T) {
	users := `"User-ID";"Location";"Age"` + "\r\n" + `"1";"x, usa";"20"` + "\r\n"
	books := `"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"` + "\r\n" +
		`"0000000001";"Broken` + "\r\n" + `title";"A";"2001";"P";"s";"m";"l"` + "\r\n" +
		`"0000000002";"Fine";"A";"2001";"P";"s";"m";"l"` + "\r\n"
	ratings := `"User-ID";"ISBN";"Book-Rating"` + "\r\n" + `"1";"0000000002";"5"` + "\r\n"
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"BX-Users.csv": users, "BX-Books.csv": books, "BX-Book-Ratings.csv": ratings})
	_, _, err := loadDir(t, BookCrossing, dir, false)
	wantErr(t, err, "BX-Books.csv:2: want 8 fields", "got 2")
	_, rep, err := loadDir(t, BookCrossing, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.Files[1]; f.Malformed != 2 || f.Records != 1 {
		t.Errorf("BX-Books.csv report %+v, want 2 malformed lines and 1 record", *f)
	}

	// 0x81 is not a cp1252 character (Python's strict decoder fails on it).
	writeFiles(t, dir, map[string]string{"BX-Users.csv": users + `"2";"x, us` + "\x81" + `a";"20"` + "\r\n"})
	_, _, err = loadDir(t, BookCrossing, dir, false)
	wantErr(t, err, "BX-Users.csv:3: byte 0x81 is not a cp1252 character")

	writeFiles(t, dir, map[string]string{"BX-Users.csv": users + `"x2";"x, usa";"20"` + "\r\n"})
	_, _, err = loadDir(t, BookCrossing, dir, false)
	wantErr(t, err, `BX-Users.csv:3: want a numeric User-ID, got "x2"`)
	writeFiles(t, dir, map[string]string{"BX-Users.csv": users + `"2";"x, usa";"twenty"` + "\r\n" + `"3";"x, uk";NULL` + "\r\n"})
	_, _, err = loadDir(t, BookCrossing, dir, false)
	wantErr(t, err, `BX-Users.csv:3: want an Age that is a number or NULL, got "twenty"`)
	// Skipping resynchronises on the next record.
	ds, rep, err := loadDir(t, BookCrossing, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.UsersRead != 2 || rep.Files[0].Malformed != 1 {
		t.Errorf("skipping a bad user record: %d users read, %d malformed; want 2 and 1", rep.UsersRead, rep.Files[0].Malformed)
	}
	if len(ds.Users) != 0 {
		t.Errorf("%d users with samples, want none (one rating)", len(ds.Users))
	}
	goodBooks := strings.Replace(books, `"Broken`+"\r\n"+`title"`, `"Mended title"`, 1)
	writeFiles(t, dir, map[string]string{"BX-Users.csv": users, "BX-Books.csv": goodBooks, "BX-Book-Ratings.csv": ratings + `"1";"0000000002"` + "\r\n"})
	_, _, err = loadDir(t, BookCrossing, dir, false)
	wantErr(t, err, `BX-Book-Ratings.csv:3: want 3 fields`)
}

func TestML25MFirstRecordBroken(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"movies.csv": "\"movieId,title,genres\n", "ratings.csv": "userId,movieId,rating,timestamp\n"})
	_, _, err := loadDir(t, ML25M, dir, false)
	wantErr(t, err, "movies.csv:1:")
}

func TestBookCrossingTrailingFields(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"BX-Users.csv":        `"User-ID";"Location";"Age"` + "\r\n" + `"1";"x, usa";"20"` + "\r\n" + `"2";"x, usa"` + "\r\n",
		"BX-Books.csv":        `"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S";"Image-URL-M";"Image-URL-L"` + "\r\n",
		"BX-Book-Ratings.csv": `"User-ID";"ISBN";"Book-Rating"` + "\r\n",
	})
	_, _, err := loadDir(t, BookCrossing, dir, false)
	wantErr(t, err, "BX-Users.csv:3: want 3 fields (User-ID, Location, Age), got 2 at the end of the file")
	_, rep, err := loadDir(t, BookCrossing, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.UsersRead != 1 || rep.Files[0].Malformed != 1 {
		t.Errorf("%d users, %d malformed; want 1 and 1", rep.UsersRead, rep.Files[0].Malformed)
	}
}
