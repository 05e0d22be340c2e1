package data

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
)

// maxExamples caps the examples a Report keeps for each kind of problem.
const maxExamples = 5

// Report says what Load read and what it dropped, so that a run's log shows
// how the dataset's files were turned into samples.
type Report struct {
	Dataset Kind          `json:"dataset"`
	Files   []*FileReport `json:"files"`

	// UnknownUsers counts ratings whose user is not in the users' file (or was
	// dropped from it); the ratings are dropped.
	UnknownUsers        int      `json:"unknown_users"`
	UnknownUserExamples []string `json:"unknown_user_examples,omitempty"`
	// UnknownItems counts ratings whose item is not in the items' file (or was
	// dropped from it); the ratings are dropped.
	UnknownItems        int      `json:"unknown_items"`
	UnknownItemExamples []string `json:"unknown_item_examples,omitempty"`

	UsersRead   int `json:"users_read"`   // profiles read from the users' file (0 for ML-25M)
	ItemsRead   int `json:"items_read"`   // items read from the items' file
	RatingsRead int `json:"ratings_read"` // well-formed rating lines
	RatingsKept int `json:"ratings_kept"` // ratings in the users' sequences
	UsersKept   int `json:"users_kept"`   // users with a sequence (len(Dataset.Users))
	ItemsKept   int `json:"items_kept"`   // items some kept rating names (len(Dataset.Items))

	// ShortHistory counts the MovieLens ratings that are no sample because
	// fewer than MinHistory ratings of their user precede them.
	ShortHistory int `json:"short_history"`
	// FewRatingsUsers counts the BookCrossing users removed for having
	// MinHistory (5) or fewer kept ratings.
	FewRatingsUsers int `json:"few_ratings_users"`
	// BadISBNs counts the BookCrossing books dropped because their ISBN holds
	// something other than ASCII letters and digits.
	BadISBNs int `json:"bad_isbns"`
	// Samples counts the samples before any subsampling (ML-25M).
	Samples int   `json:"samples"`
	Stats   Stats `json:"stats"`

	// Fingerprint identifies the inputs and options the samples were built
	// from (see Fingerprint); Prepare sets it, so that later stages can say
	// which data their results came from.
	Fingerprint string `json:"fingerprint,omitempty"`

	// Notes explain choices that a reader of the results should know about
	// (subsampling, how a validation split was made).
	Notes []string `json:"notes,omitempty"`
}

// FileReport says what was read from one input file.
type FileReport struct {
	Path      string `json:"path"`
	Lines     int    `json:"lines"`   // physical lines read
	Records   int    `json:"records"` // well-formed records
	Blank     int    `json:"blank"`   // empty lines skipped
	Malformed int    `json:"malformed"`
	// MalformedExamples are the first few malformed records, as
	// "file:line: problem".
	MalformedExamples []string `json:"malformed_examples,omitempty"`
	// Encoding is how the file's text was decoded, where it is not plain
	// bytes: "cp1252" (BookCrossing's original), or "utf-8" for a
	// BookCrossing file that had already been converted to UTF-8.
	Encoding string `json:"encoding,omitempty"`
}

// Shares of the rating lines naming unknown users or items above which
// Load warns: MovieLens files name none; the original BookCrossing ratings
// name about 10% books that BX-Books.csv lacks.
const (
	unknownWarnShare   = 0.01
	unknownBXItemShare = 0.2
)

// warn logs what a person should know about how the files were read:
// skipped malformed lines (with their count), files read as UTF-8 instead
// of cp1252, and many ratings dropped for naming unknown users or items.
func (r *Report) warn(log *slog.Logger) {
	for _, f := range r.Files {
		if f.Malformed > 0 {
			first := ""
			if len(f.MalformedExamples) > 0 {
				first = f.MalformedExamples[0]
			}
			log.Warn("data: skipped malformed lines (data.skip_malformed)", "file", f.Path, "count", f.Malformed, "first", first)
		}
		if f.Encoding == "utf-8" {
			log.Warn("data: the file is already UTF-8 (valid UTF-8 with multi-byte characters), not the original cp1252: read as UTF-8", "file", f.Path)
		}
	}
	read := r.RatingsRead
	if read == 0 {
		return
	}
	itemShare := unknownWarnShare
	if r.Dataset == BookCrossing {
		itemShare = unknownBXItemShare
	}
	if float64(r.UnknownUsers) > unknownWarnShare*float64(read) {
		log.Warn("data: many ratings name users missing from the users' file; they are dropped",
			"count", r.UnknownUsers, "percent", fmt.Sprintf("%.1f", 100*float64(r.UnknownUsers)/float64(read)), "examples", strings.Join(r.UnknownUserExamples, "; "))
	}
	if float64(r.UnknownItems) > itemShare*float64(read) {
		log.Warn("data: many ratings name items missing from the items' file; they are dropped",
			"count", r.UnknownItems, "percent", fmt.Sprintf("%.1f", 100*float64(r.UnknownItems)/float64(read)), "examples", strings.Join(r.UnknownItemExamples, "; "))
	}
}

// fileReader counts the records of one file and handles malformed ones
// according to Options.SkipMalformed.
type fileReader struct {
	fr   *FileReport
	name string // base name used in messages
	skip bool
}

func (r *Report) newFile(path string, skip bool) *fileReader {
	fr := &FileReport{Path: path}
	r.Files = append(r.Files, fr)
	return &fileReader{fr: fr, name: filepath.Base(path), skip: skip}
}

// malformed records a malformed record at line and returns the error that
// stops the load, or nil when malformed records are skipped.
func (f *fileReader) malformed(line int, format string, args ...any) error {
	msg := fmt.Sprintf("%s:%d: %s", f.name, line, fmt.Sprintf(format, args...))
	if !f.skip {
		return fmt.Errorf("data: %s (data.skip_malformed=true skips such lines, counting them)", msg)
	}
	f.fr.Malformed++
	if len(f.fr.MalformedExamples) < maxExamples {
		f.fr.MalformedExamples = append(f.fr.MalformedExamples, msg)
	}
	return nil
}

func (r *Report) unknownUser(where string) {
	r.UnknownUsers++
	if len(r.UnknownUserExamples) < maxExamples {
		r.UnknownUserExamples = append(r.UnknownUserExamples, where)
	}
}

func (r *Report) unknownItem(where string) {
	r.UnknownItems++
	if len(r.UnknownItemExamples) < maxExamples {
		r.UnknownItemExamples = append(r.UnknownItemExamples, where)
	}
}
