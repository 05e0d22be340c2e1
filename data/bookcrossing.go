package data

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"

	"github.com/rella-project/rella/pyrand"
)

// BookCrossing is read the way the ReLLa authors' preprocessing read it
// (RELLA.md section 1), so that the same files give the same samples:
//
//   - every file is decoded as cp1252 with Python's universal newlines
//     ("\r\n" and a lone "\r" both end a line); a file already converted to
//     UTF-8 (valid UTF-8 with multi-byte sequences) is read as UTF-8, with
//     a warning, since decoding it as cp1252 would garble every accent;
//   - BX-Users.csv is a stream of fields, each a quoted string (a quote
//     preceded by a backslash does not close it; fields may span lines) or
//     NULL, taken three at a time: User-ID, Location, Age;
//   - BX-Books.csv is split into lines, each line at `";"`, the first and last
//     character of each part dropped (the quotes) and tabs trimmed; the three
//     image URLs are dropped;
//   - BX-Book-Ratings.csv is split into lines and each line at ";".
//
// The files hold far more users and books than ratings name, so the
// Dataset keeps only the users with a sample and the books their sequences
// name.

// bxFile is a BookCrossing file decoded to text with "\n" line ends.
type bxFile struct {
	path, name string
	text       string
}

// readCP1252 reads the file at path, decodes it from cp1252 (or, when it
// is already UTF-8, see isConvertedUTF8, as UTF-8) and turns "\r\n" and
// "\r" into "\n". A byte cp1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90,
// 0x9D) is an encoding error, as it is for Python's strict decoder; when
// malformed input is skipped it becomes U+FFFD and is counted.
func readCP1252(path string, fr *fileReader) (*bxFile, error) {
	if _, err := os.Stat(path); err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("data: dataset file %s is missing: %w", path, err)
		}
		return nil, fmt.Errorf("data: open %s: %w", path, err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("data: read %s: %w", path, err)
	}
	fr.fr.Encoding = "cp1252"
	utf := isConvertedUTF8(raw)
	if utf {
		// Converted already (iconv -f cp1252 -t utf-8 and the like):
		// decoding it as cp1252 again would turn every accent into mojibake.
		fr.fr.Encoding = "utf-8"
		raw = bytes.TrimPrefix(raw, []byte("\xEF\xBB\xBF"))
	}
	var sb strings.Builder
	sb.Grow(len(raw) + len(raw)/16)
	line := 1
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '\r':
			if i+1 < len(raw) && raw[i+1] == '\n' {
				i++
			}
			sb.WriteByte('\n')
			line++
		case c == '\n':
			sb.WriteByte('\n')
			line++
		case c < 0x80 || utf:
			sb.WriteByte(c)
		default:
			r := charmap.Windows1252.DecodeByte(c)
			if r == utf8.RuneError {
				if err := fr.malformed(line, "byte 0x%02X is not a cp1252 character (is the file in another encoding?)", c); err != nil {
					return nil, err
				}
			}
			sb.WriteRune(r)
		}
	}
	fr.fr.Lines = line
	if n := len(raw); n > 0 && (raw[n-1] == '\n' || raw[n-1] == '\r') {
		fr.fr.Lines--
	}
	return &bxFile{path: path, name: filepath.Base(path), text: sb.String()}, nil
}

// isConvertedUTF8 reports whether raw is a BookCrossing file already
// converted to UTF-8: valid UTF-8 holding at least one multi-byte sequence.
// The originals are cp1252, where accented letters are single bytes that
// (almost never all) form valid UTF-8; a pure-ASCII file reads the same
// either way.
func isConvertedUTF8(raw []byte) bool {
	high := false
	for _, c := range raw {
		if c >= 0x80 {
			high = true
			break
		}
	}
	return high && utf8.Valid(raw)
}

// lines calls fn with each line of f (without its "\n") and its number.
func (f *bxFile) lines(ctx context.Context, fn func(line int, s string) error) error {
	s := f.text
	for n := 1; len(s) > 0; n++ {
		i := strings.IndexByte(s, '\n')
		var l string
		if i < 0 {
			l, s = s, ""
		} else {
			l, s = s[:i], s[i+1:]
		}
		if n%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("data: read %s: %w", f.path, err)
			}
		}
		if err := fn(n, l); err != nil {
			return err
		}
	}
	return nil
}

// pyStrip trims what Python's str.strip() trims: Unicode whitespace and the
// separators U+001C..U+001F.
func pyStrip(s string) string {
	return strings.TrimFunc(s, isPySpace)
}

func isPySpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0x1c, 0x1d, 0x1e, 0x1f, 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// pySlice1 returns s[1:-1] in Python's code-point terms.
func pySlice1(s string) string {
	if s == "" {
		return ""
	}
	_, first := utf8.DecodeRuneInString(s)
	_, last := utf8.DecodeLastRuneInString(s)
	if first+last >= len(s) {
		return ""
	}
	return s[first : len(s)-last]
}

func loadBookCrossing(ctx context.Context, opts Options, log *slog.Logger) (*Dataset, *Report, error) {
	rep := &Report{Dataset: BookCrossing}
	users, userIdx, err := readBXUsers(ctx, filepath.Join(opts.Dir, "BX-Users.csv"), opts, rep)
	if err != nil {
		return nil, nil, err
	}
	books, bookIdx, err := readBXBooks(ctx, filepath.Join(opts.Dir, "BX-Books.csv"), opts, rep)
	if err != nil {
		return nil, nil, err
	}
	seqs, order, err := readBXRatings(ctx, filepath.Join(opts.Dir, "BX-Book-Ratings.csv"), opts, rep, userIdx, bookIdx)
	if err != nil {
		return nil, nil, err
	}
	log.Debug("data: read bookcrossing", "users", len(users), "books", len(books), "rated_users", len(order))
	ds, err := bookCrossingSamples(users, books, seqs, order, opts, rep)
	return ds, rep, err
}

// bxRating is one kept BookCrossing rating.
type bxRating struct {
	book   int32
	rating float32
}

// bookCrossingSamples removes the users with MinHistory (the authors' 5) or
// fewer kept ratings, so that every history has at least MinHistory items; it shuffles
// each remaining user's ratings (random.seed(SampleSeed) before each user,
// users in order of first appearance) and makes the last one the target;
// then it shuffles the samples (random.seed(SampleSeed) again) and splits
// them as the authors did: train = the first int(0.9 n), test = the rest.
//
// The authors have no validation split. We keep their test split exactly
// and carve Valid from the end of their train list: Valid = its last
// floor(n/10) samples, Train = the rest; the Report says so.
func bookCrossingSamples(users []User, books []Item, seqs [][]bxRating, order []int32, opts Options, rep *Report) (*Dataset, error) {
	ds := &Dataset{Kind: BookCrossing}
	bookNew := make([]int32, len(books))
	for i := range bookNew {
		bookNew[i] = -1
	}
	var kept []int32 // users, in order of first appearance
	for _, u := range order {
		if len(seqs[u]) <= opts.MinHistory {
			rep.FewRatingsUsers++
			continue
		}
		kept = append(kept, u)
		for _, r := range seqs[u] {
			bookNew[r.book] = 0
		}
	}
	for i, used := range bookNew {
		if used == 0 {
			bookNew[i] = int32(len(ds.Items))
			ds.Items = append(ds.Items, books[i])
		}
	}
	seeded := pyrand.NewPython(opts.SampleSeed)
	samples := make([]Sample, 0, len(kept))
	for _, u := range kept {
		seq := seqs[u]
		py := *seeded // random.seed(SampleSeed) before each user's shuffle
		py.Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i] })
		ev := make([]Event, len(seq))
		for i, r := range seq {
			ev[i] = Event{Item: bookNew[r.book], Rating: r.rating}
			rep.RatingsKept++
		}
		nu := int32(len(ds.Users))
		ds.Users = append(ds.Users, users[u])
		ds.Seqs = append(ds.Seqs, ev)
		last := ev[len(ev)-1]
		var label int8
		if last.Rating >= 5 {
			label = 1
		}
		samples = append(samples, Sample{User: nu, Pos: int32(len(ev) - 1), Label: label})
	}
	py := *seeded // and again before the sample list's shuffle
	py.Shuffle(len(samples), func(i, j int) { samples[i], samples[j] = samples[j], samples[i] })
	n := len(samples)
	nTrain := int(0.9 * float64(n)) // the authors' int(0.9 * len(df_data))
	nValid := min(n/10, nTrain)
	ds.Train = samples[: nTrain-nValid : nTrain-nValid]
	ds.Valid = samples[nTrain-nValid : nTrain : nTrain]
	ds.Test = samples[nTrain:]
	rep.Samples = n
	rep.Notes = append(rep.Notes, fmt.Sprintf(
		"bookcrossing: the authors split %d samples into train %d and test %d; test is theirs, and valid is the last %d samples of their train list (train keeps the first %d)",
		n, nTrain, n-nTrain, nValid, nTrain-nValid))
	return ds, nil
}

// readBXUsers reads BX-Users.csv as a stream of fields: quoted strings or
// NULL, three per user.
func readBXUsers(ctx context.Context, path string, opts Options, rep *Report) ([]User, map[string]int32, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	f, err := readCP1252(path, fr)
	if err != nil {
		return nil, nil, err
	}
	type token struct {
		s    string
		null bool
		line int
	}
	var toks []token
	s := f.text
	line := 1
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "NULL"):
			toks = append(toks, token{null: true, line: line})
			i += 4
			continue
		case s[i] == '"':
			end := closingQuote(s, i+1)
			if end >= 0 {
				toks = append(toks, token{s: s[i+1 : end], line: line})
				line += strings.Count(s[i:end+1], "\n")
				i = end + 1
				continue
			}
		}
		if s[i] == '\n' {
			line++
			if line%65536 == 0 {
				if err := ctx.Err(); err != nil {
					return nil, nil, fmt.Errorf("data: read %s: %w", path, err)
				}
			}
		}
		i++
	}
	// The first three fields are the header.
	if len(toks) < 3 || toks[0].s != "User-ID" || toks[1].s != "Location" || toks[2].s != "Age" {
		return nil, nil, fmt.Errorf("data: %s:1: want the header \"User-ID\";\"Location\";\"Age\"", f.name)
	}
	toks = toks[3:]
	var users []User
	idx := make(map[string]int32)
	for len(toks) > 0 {
		t := toks
		bad := ""
		switch {
		case len(t) < 3:
			bad = fmt.Sprintf("want 3 fields (User-ID, Location, Age), got %d at the end of the file", len(t))
		case t[0].null || !isDigits(t[0].s):
			bad = fmt.Sprintf("want a numeric User-ID, got %s", tokenText(t[0].s, t[0].null))
		case !t[2].null && !isPyInt(t[2].s):
			bad = fmt.Sprintf("want an Age that is a number or NULL, got %s", tokenText(t[2].s, t[2].null))
		}
		if bad != "" {
			if err := fr.malformed(t[0].line, "%s", bad); err != nil {
				return nil, nil, err
			}
			if len(t) < 3 {
				break
			}
			// Resynchronise: drop fields until three of them fit.
			toks = toks[1:]
			for len(toks) >= 3 && !(!toks[0].null && isDigits(toks[0].s) && (toks[2].null || isPyInt(toks[2].s))) {
				toks = toks[1:]
			}
			continue
		}
		toks = toks[3:]
		fr.fr.Records++
		id := t[0].s
		if _, dup := idx[id]; dup {
			continue // the authors keep the first profile of a user id
		}
		loc := "unknown"
		if !t[1].null {
			loc = bxCountry(t[1].s)
		}
		age := "unknown"
		if !t[2].null {
			a, _ := strconv.Atoi(strings.TrimSpace(t[2].s))
			age = bxAgeBucket(a)
		}
		idx[id] = int32(len(users))
		users = append(users, User{ID: id, Age: age, Location: loc})
	}
	rep.UsersRead = len(users)
	return users, idx, nil
}

// closingQuote returns the index of the first '"' at or after i that does not
// follow a backslash, or -1.
func closingQuote(s string, i int) int {
	for {
		j := strings.IndexByte(s[i:], '"')
		if j < 0 {
			return -1
		}
		j += i
		if s[j-1] != '\\' {
			return j
		}
		i = j + 1
	}
}

func tokenText(s string, null bool) string {
	if null {
		return "NULL"
	}
	return strconv.Quote(s)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isPyInt says whether Python's int() accepts s (for plain decimal text).
func isPyInt(s string) bool {
	_, err := strconv.Atoi(strings.TrimSpace(s))
	return err == nil
}

// bxAgeBucket maps an age to the authors' buckets.
func bxAgeBucket(a int) string {
	switch {
	case a < 5 || a > 100:
		return "unknown"
	case a < 18:
		return "under 18"
	case a < 25:
		return "18-24"
	case a < 60:
		lo := a / 5 * 5
		return fmt.Sprintf("%d-%d", lo, lo+4)
	}
	return "60+"
}

// readBXBooks reads BX-Books.csv line by line.
func readBXBooks(ctx context.Context, path string, opts Options, rep *Report) ([]Item, map[string]int32, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	f, err := readCP1252(path, fr)
	if err != nil {
		return nil, nil, err
	}
	var books []Item
	idx := make(map[string]int32)
	err = f.lines(ctx, func(line int, l string) error {
		if line == 1 {
			return nil // header
		}
		l = pyStrip(l)
		if l == "" {
			fr.fr.Blank++
			return nil
		}
		parts := splitQuoted(l)
		if len(parts) != 8 {
			return fr.malformed(line, `want 8 fields separated by ";" (ISBN, title, author, year, publisher, 3 image URLs), got %d`, len(parts))
		}
		for i := range parts[:5] {
			parts[i] = strings.Trim(pySlice1(parts[i]), "\t")
		}
		fr.fr.Records++
		isbn := parts[0]
		if !isAlnum(isbn) {
			rep.BadISBNs++
			return nil
		}
		if _, dup := idx[isbn]; dup {
			return nil // the authors keep the first row of an ISBN
		}
		year := parts[3]
		if utf8.RuneCountInString(year) != 4 {
			year = "unknown"
		}
		author, publisher := parts[2], parts[4]
		if strings.ToLower(author) == "n/a" {
			author = "unknown"
		}
		if strings.ToLower(publisher) == "n/a" {
			publisher = "unknown"
		}
		idx[isbn] = int32(len(books))
		books = append(books, Item{ID: isbn, Title: parts[1], Author: author, Year: year, Publisher: publisher})
		return nil
	})
	rep.ItemsRead = len(books)
	return books, idx, err
}

// splitQuoted splits s at every ';' that has a '"' on both sides, keeping
// the quotes (the authors' re.split(r'(?<=");(?=")', line)).
func splitQuoted(s string) []string {
	var parts []string
	start := 0
	for i := 1; i+1 < len(s); i++ {
		if s[i] == ';' && s[i-1] == '"' && s[i+1] == '"' {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// readBXRatings reads BX-Book-Ratings.csv and returns the kept ratings per
// user and the users in order of first appearance among them.
func readBXRatings(ctx context.Context, path string, opts Options, rep *Report, userIdx, bookIdx map[string]int32) ([][]bxRating, []int32, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	f, err := readCP1252(path, fr)
	if err != nil {
		return nil, nil, err
	}
	seqs := make([][]bxRating, len(userIdx))
	var order []int32
	err = f.lines(ctx, func(line int, l string) error {
		if line == 1 {
			return nil // header
		}
		l = pyStrip(l)
		if l == "" {
			fr.fr.Blank++
			return nil
		}
		parts := strings.Split(l, ";")
		if len(parts) != 3 {
			return fr.malformed(line, `want 3 fields (User-ID, ISBN, Book-Rating) separated by ";", got %d`, len(parts))
		}
		user, isbn, rs := pySlice1(parts[0]), pySlice1(parts[1]), pySlice1(parts[2])
		r, err := strconv.Atoi(strings.TrimSpace(rs))
		if err != nil {
			return fr.malformed(line, "rating %q is not a number", rs)
		}
		fr.fr.Records++
		rep.RatingsRead++
		u, ok := userIdx[user]
		if !ok {
			rep.unknownUser(fmt.Sprintf("%s:%d: user %q", f.name, line, user))
			return nil
		}
		b, ok := bookIdx[isbn]
		if !ok {
			rep.unknownItem(fmt.Sprintf("%s:%d: ISBN %q", f.name, line, isbn))
			return nil
		}
		if seqs[u] == nil {
			order = append(order, u)
		}
		seqs[u] = append(seqs[u], bxRating{book: b, rating: float32(r)})
		return nil
	})
	return seqs, order, err
}
