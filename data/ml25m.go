package data

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"unicode/utf8"

	"github.com/rella-project/rella/pyrand"
)

var commaSep = []byte(",")

// loadML25M reads movies.csv and ratings.csv (UTF-8 CSV with a header line)
// from opts.Dir. ML-25M has no user profiles: users are those of the ratings,
// in order of first appearance.
func loadML25M(ctx context.Context, opts Options, log *slog.Logger) (*Dataset, *Report, error) {
	rep := &Report{Dataset: ML25M}
	items, itemIdx, err := readML25MMovies(ctx, filepath.Join(opts.Dir, "movies.csv"), opts, rep)
	if err != nil {
		return nil, nil, err
	}
	users, ratings, err := readML25MRatings(ctx, filepath.Join(opts.Dir, "ratings.csv"), opts, rep, itemIdx)
	if err != nil {
		return nil, nil, err
	}
	log.Debug("data: read ml-25m", "users", len(users), "movies", len(items), "ratings", len(ratings))
	ds := movieLens(ML25M, users, items, ratings, opts, rep, func(r float32) int8 {
		if r > 3 {
			return 1
		}
		return 0
	})
	// The paper scores 70,000 test and trains on 90,000 train rows drawn
	// with pandas' DataFrame.sample(n, random_state=42), i.e. numpy's
	// RandomState(42).permutation(len)[:n]. pandas returns the rows in that
	// drawn order, not in time order, and so do we. The validation split is
	// kept whole (use MaxEvalSamples to cap it).
	if ds.Test, err = subsample(ds.Test, opts.ML25MTestSamples, opts.SampleSeed); err != nil {
		return nil, nil, err
	}
	if ds.Train, err = subsample(ds.Train, opts.ML25MTrainSamples, opts.SampleSeed); err != nil {
		return nil, nil, err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf(
		"ml-25m: test and train subsampled to at most %d and %d rows like pandas sample(n, random_state=%d), in the drawn order; valid kept whole",
		opts.ML25MTestSamples, opts.ML25MTrainSamples, opts.SampleSeed))
	return ds, rep, nil
}

// subsample returns n samples of s drawn as pandas' DataFrame.sample(n,
// random_state=seed) draws rows, or s itself when n is 0 or s has no more
// than n samples.
func subsample(s []Sample, n int, seed int64) ([]Sample, error) {
	if n == 0 || len(s) <= n {
		return s, nil
	}
	rs, err := pyrand.NewNumPy(seed)
	if err != nil {
		return nil, fmt.Errorf("data: sample_seed: %w", err)
	}
	idx, err := rs.Choice(len(s), n)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	out := make([]Sample, n)
	for i, j := range idx {
		out[i] = s[j]
	}
	return out, nil
}

func readML25MMovies(ctx context.Context, path string, opts Options, rep *Report) ([]Item, map[string]int32, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	f, err := openInput(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	var items []Item
	idx := make(map[string]int32)
	header := true
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			// The CSV reader cannot resynchronise reliably after a quoting
			// error, but it does continue at the next record.
			if err := fr.malformed(pe.StartLine, "%v", pe.Err); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("data: read %s: %w", path, err)
		}
		line, _ := cr.FieldPos(0)
		fr.fr.Lines = line
		if len(items)%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, nil, fmt.Errorf("data: read %s: %w", path, err)
			}
		}
		valid := true
		for _, s := range rec {
			valid = valid && utf8.ValidString(s)
		}
		if !valid {
			if err := fr.malformed(line, "not valid UTF-8"); err != nil {
				return nil, nil, err
			}
			continue
		}
		if header {
			header = false
			if len(rec) != 3 || rec[0] != "movieId" || rec[1] != "title" || rec[2] != "genres" {
				return nil, nil, fmt.Errorf("data: %s:%d: want the header movieId,title,genres, got %q", fr.name, line, rec)
			}
			continue
		}
		if len(rec) != 3 {
			if err := fr.malformed(line, "want 3 fields (movieId,title,genres), got %d", len(rec)); err != nil {
				return nil, nil, err
			}
			continue
		}
		if _, ok := parseUint([]byte(rec[0])); !ok {
			if err := fr.malformed(line, "movie id %q is not a number", rec[0]); err != nil {
				return nil, nil, err
			}
			continue
		}
		if _, dup := idx[rec[0]]; dup {
			if err := fr.malformed(line, "movie id %s appears twice", rec[0]); err != nil {
				return nil, nil, err
			}
			continue
		}
		fr.fr.Records++
		idx[rec[0]] = int32(len(items))
		// The authors strip the genres (not the title) before splitting.
		items = append(items, Item{ID: rec[0], Title: rec[1], Genre: firstGenre(pyStrip(rec[2]))})
	}
	rep.ItemsRead = len(items)
	return items, idx, nil
}

func readML25MRatings(ctx context.Context, path string, opts Options, rep *Report, itemIdx map[string]int32) ([]User, []mlRating, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	var users []User
	userIdx := make(map[string]int32)
	ratings := make([]mlRating, 0, ratingsCap(path, 20))
	var f [4][]byte
	lastUser, lastIdx := "", int32(-1)
	err := eachLine(ctx, path, fr, func(line int, b []byte) error {
		if line == 1 {
			if string(b) != "userId,movieId,rating,timestamp" {
				return fmt.Errorf("data: %s:1: want the header userId,movieId,rating,timestamp, got %q", fr.name, b)
			}
			return nil
		}
		if !utf8.Valid(b) {
			return fr.malformed(line, "not valid UTF-8")
		}
		if n := splitSep(b, commaSep, f[:]); n != 4 {
			return fr.malformed(line, "want 4 fields (userId,movieId,rating,timestamp) separated by \",\", got %d", n)
		}
		if _, ok := parseUint(f[0]); !ok {
			return fr.malformed(line, "user id %q is not a number", f[0])
		}
		r, ok := parseHalfStars(f[2])
		if !ok {
			return fr.malformed(line, "rating %q is not one of 0.5, 1.0, ..., 5.0", f[2])
		}
		t, ok := parseUint(f[3])
		if !ok {
			return fr.malformed(line, "timestamp %q is not a number", f[3])
		}
		fr.fr.Records++
		rep.RatingsRead++
		it, ok := itemIdx[string(f[1])]
		if !ok {
			rep.unknownItem(fmt.Sprintf("%s:%d: movie %s", fr.name, line, f[1]))
			return nil
		}
		if string(f[0]) != lastUser {
			u, ok := userIdx[string(f[0])]
			if !ok {
				u = int32(len(users))
				id := string(f[0])
				userIdx[id] = u
				users = append(users, User{ID: id})
			}
			lastUser, lastIdx = users[u].ID, u
		}
		ratings = append(ratings, mlRating{time: int64(t), user: lastIdx, item: it, rating: r})
		return nil
	})
	return users, ratings, err
}

// parseHalfStars parses a rating 0.5..5 in steps of 0.5 written as "4",
// "4.0" or "3.5".
func parseHalfStars(b []byte) (float32, bool) {
	if len(b) == 0 || b[0] < '0' || b[0] > '5' {
		return 0, false
	}
	v := float32(b[0] - '0')
	rest := b[1:]
	if len(rest) > 0 {
		if rest[0] != '.' || len(rest) < 2 {
			return 0, false
		}
		switch rest[1] {
		case '0':
		case '5':
			v += 0.5
		default:
			return 0, false
		}
		for _, c := range rest[2:] {
			if c != '0' {
				return 0, false
			}
		}
	}
	return v, v >= 0.5 && v <= 5
}
