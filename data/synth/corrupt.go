package synth

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/atomicfile"
)

// Corruption is a way of damaging a dataset's files, for tests of how the
// readers report bad input.
type Corruption int

// The corruptions Corrupt applies. Each changes one line of one file.
const (
	// TruncatedLine cuts the ratings file's last line just after the
	// first character of its second separator and drops its line end, as an
	// interrupted copy leaves it ("7::42:", "7,42,", "\"7\";\"04515").
	TruncatedLine Corruption = iota + 1
	// ExtraField appends one more field to a data line of the ratings file.
	ExtraField
	// InvalidEncoding puts bytes the file's encoding cannot hold into a
	// movie or book title: "\xff\xfe" in ML-25M's UTF-8 movies.csv, the
	// undefined Windows-1252 byte 0x81 in BookCrossing's BX-Books.csv.
	// ISO-8859-1 has no invalid byte, so for ML-1M the byte 0xff replaces
	// the rating of a line of ratings.dat instead.
	InvalidEncoding
	// UnknownUser makes a rating name a user id that the users' file lacks
	// (ML-1M and BookCrossing; ML-25M has no users' file).
	UnknownUser
	// UnknownItem makes a rating name a movie id or ISBN that the items'
	// file lacks.
	UnknownItem
)

// String names the corruption.
func (c Corruption) String() string {
	switch c {
	case TruncatedLine:
		return "truncated-line"
	case ExtraField:
		return "extra-field"
	case InvalidEncoding:
		return "invalid-encoding"
	case UnknownUser:
		return "unknown-user"
	case UnknownItem:
		return "unknown-item"
	}
	return fmt.Sprintf("Corruption(%d)", int(c))
}

// Damage says where Corrupt changed a dataset: the file's name in the
// dataset's folder and the 1-based line number.
type Damage struct {
	File string
	Line int
}

// format describes a dataset's file layout for Corrupt.
type format struct {
	ratings, items string // file names
	header         bool   // the files start with a header line
	sep            string // field separator
	quoted         bool   // every field in double quotes
}

func formatOf(kind data.Kind) (format, error) {
	switch kind {
	case data.ML1M:
		return format{ratings: "ratings.dat", items: "movies.dat", sep: "::"}, nil
	case data.ML25M:
		return format{ratings: "ratings.csv", items: "movies.csv", header: true, sep: ","}, nil
	case data.BookCrossing:
		return format{ratings: "BX-Book-Ratings.csv", items: "BX-Books.csv", header: true, sep: ";", quoted: true}, nil
	}
	return format{}, fmt.Errorf("synth: unknown dataset kind %q", kind)
}

// Corrupt damages the dataset of the given kind in dir (as written by
// WriteML1M, WriteML25M or WriteBookCrossing) in place, choosing the line
// with seed, and says where. The damaged file is rewritten atomically.
func Corrupt(dir string, kind data.Kind, c Corruption, seed int64) (Damage, error) {
	f, err := formatOf(kind)
	if err != nil {
		return Damage{}, err
	}
	file := f.ratings
	if c == InvalidEncoding && kind != data.ML1M {
		file = f.items
	}
	if c == UnknownUser && kind == data.ML25M {
		return Damage{}, fmt.Errorf("synth: %s: ML-25M has no users' file", c)
	}
	path := filepath.Join(dir, file)
	raw, err := os.ReadFile(path)
	if err != nil {
		return Damage{}, fmt.Errorf("synth: corrupt: %w", err)
	}
	lines := bytes.SplitAfter(raw, []byte("\n"))
	if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
		lines = lines[:n-1]
	}
	first := 0
	if f.header {
		first = 1
	}
	if len(lines) <= first {
		return Damage{}, fmt.Errorf("synth: corrupt: %s has no data line", path)
	}
	i := first + newRand(seed, 99).IntN(len(lines)-first)
	if c == TruncatedLine {
		i = len(lines) - 1
	}
	body, end := splitEOL(lines[i])
	body = append([]byte(nil), body...) // lines[i] shares raw's array
	fields := bytes.Split(body, []byte(f.sep))
	unquote := func(b []byte) []byte {
		if f.quoted {
			return b[1 : len(b)-1]
		}
		return b
	}
	quote := func(s string) []byte {
		if f.quoted {
			return []byte(`"` + s + `"`)
		}
		return []byte(s)
	}
	switch c {
	case TruncatedLine:
		cut := len(fields[0]) + len(fields[1]) + len(f.sep) + 1
		if f.quoted {
			cut = len(fields[0]) + len(f.sep) + 1 + len(unquote(fields[1]))/2
		}
		body, end = body[:cut], nil
	case ExtraField:
		body = append(append(body, f.sep...), quote("0")...)
	case InvalidEncoding:
		switch kind {
		case data.ML1M:
			fields[2] = []byte{0xff}
		case data.ML25M:
			// The title is the second field; quoted titles hold commas, so
			// insert right after the first separator.
			k := bytes.Index(body, []byte(f.sep)) + 1
			body = append(body[:k:k], append([]byte{0xff, 0xfe}, body[k:]...)...)
			fields = nil
		case data.BookCrossing:
			k := bytes.Index(body, []byte(`";"`)) + 3
			body = append(body[:k:k], append([]byte{0x81}, body[k:]...)...)
			fields = nil
		}
		if fields != nil {
			body = bytes.Join(fields, []byte(f.sep))
		}
	case UnknownUser:
		fields[0] = quote("999999999")
		body = bytes.Join(fields, []byte(f.sep))
	case UnknownItem:
		id := "999999999"
		if kind == data.BookCrossing {
			id = "9999999999" // a well-formed ISBN-10
		}
		fields[1] = quote(id)
		body = bytes.Join(fields, []byte(f.sep))
	default:
		return Damage{}, fmt.Errorf("synth: unknown corruption %d", int(c))
	}
	lines[i] = append(body, end...)
	if err := atomicfile.WriteFile(path, bytes.Join(lines, nil)); err != nil {
		return Damage{}, fmt.Errorf("synth: corrupt: %w", err)
	}
	return Damage{File: file, Line: i + 1}, nil
}

// splitEOL splits a line into its body and its line end ("\n", "\r\n" or
// none).
func splitEOL(l []byte) (body, end []byte) {
	n := len(l)
	switch {
	case n >= 2 && l[n-2] == '\r' && l[n-1] == '\n':
		return l[:n-2], l[n-2:]
	case n >= 1 && l[n-1] == '\n':
		return l[:n-1], l[n-1:]
	}
	return l, nil
}
