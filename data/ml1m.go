package data

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
)

// ml1mAges maps ML-1M's age codes to the prompts' text.
var ml1mAges = map[string]string{
	"1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44",
	"45": "45-49", "50": "50-55", "56": "above 56",
}

// ml1mOccupations lists ML-1M's occupations by code, as the dataset's README
// names them, except that 0 reads "other or not specified".
var ml1mOccupations = [...]string{
	"other or not specified", "academic/educator", "artist", "clerical/admin",
	"college/grad student", "customer service", "doctor/health care",
	"executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
	"programmer", "retired", "sales/marketing", "scientist", "self-employed",
	"technician/engineer", "tradesman/craftsman", "unemployed", "writer",
}

var sepColons = []byte("::")

// loadML1M reads users.dat, movies.dat and ratings.dat (ISO-8859-1,
// "::"-separated) from opts.Dir.
func loadML1M(ctx context.Context, opts Options, log *slog.Logger) (*Dataset, *Report, error) {
	rep := &Report{Dataset: ML1M}
	users, userIdx, err := readML1MUsers(ctx, filepath.Join(opts.Dir, "users.dat"), opts, rep)
	if err != nil {
		return nil, nil, err
	}
	items, itemIdx, err := readML1MMovies(ctx, filepath.Join(opts.Dir, "movies.dat"), opts, rep)
	if err != nil {
		return nil, nil, err
	}
	ratings, err := readML1MRatings(ctx, filepath.Join(opts.Dir, "ratings.dat"), opts, rep, userIdx, itemIdx)
	if err != nil {
		return nil, nil, err
	}
	log.Debug("data: read ml-1m", "users", len(users), "movies", len(items), "ratings", len(ratings))
	ds := movieLens(ML1M, users, items, ratings, opts, rep, func(r float32) int8 {
		if r > 3 {
			return 1
		}
		return 0
	})
	return ds, rep, nil
}

// eachLine calls fn for each non-empty line of the file at path, checking ctx
// every so often.
func eachLine(ctx context.Context, path string, fr *fileReader, fn func(line int, b []byte) error) error {
	f, err := openInput(path)
	if err != nil {
		return err
	}
	defer f.Close()
	lr := newLineReader(f)
	for {
		b, err := lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("data: read %s: %w", path, err)
		}
		fr.fr.Lines++
		if lr.line%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("data: read %s: %w", path, err)
			}
		}
		if len(b) == 0 {
			fr.fr.Blank++
			continue
		}
		if err := fn(lr.line, b); err != nil {
			return err
		}
	}
}

func readML1MUsers(ctx context.Context, path string, opts Options, rep *Report) ([]User, map[string]int32, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	var users []User
	idx := make(map[string]int32)
	var f [5][]byte
	err := eachLine(ctx, path, fr, func(line int, b []byte) error {
		if n := splitSep(b, sepColons, f[:]); n != 5 {
			return fr.malformed(line, "want 5 fields (UserID::Gender::Age::Occupation::Zip-code) separated by \"::\", got %d", n)
		}
		id := string(f[0])
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return fr.malformed(line, "user id %q is not a number", id)
		}
		var gender string
		switch string(f[1]) {
		case "M":
			gender = "male"
		case "F":
			gender = "female"
		default:
			return fr.malformed(line, "gender %q is not M or F", latin1(f[1]))
		}
		age, ok := ml1mAges[string(f[2])]
		if !ok {
			return fr.malformed(line, "age code %q is not one of 1, 18, 25, 35, 45, 50, 56", latin1(f[2]))
		}
		occ, err := strconv.Atoi(string(f[3]))
		if err != nil || occ < 0 || occ >= len(ml1mOccupations) {
			return fr.malformed(line, "occupation %q is not a code 0-20", latin1(f[3]))
		}
		if _, dup := idx[id]; dup {
			return fr.malformed(line, "user id %s appears twice", id)
		}
		fr.fr.Records++
		idx[id] = int32(len(users))
		users = append(users, User{ID: id, Gender: gender, Age: age, Occupation: ml1mOccupations[occ], Zip: latin1(f[4])})
		return nil
	})
	rep.UsersRead = len(users)
	return users, idx, err
}

func readML1MMovies(ctx context.Context, path string, opts Options, rep *Report) ([]Item, map[string]int32, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	var items []Item
	idx := make(map[string]int32)
	var f [3][]byte
	err := eachLine(ctx, path, fr, func(line int, b []byte) error {
		if n := splitSep(b, sepColons, f[:]); n != 3 {
			return fr.malformed(line, "want 3 fields (MovieID::Title::Genres) separated by \"::\", got %d", n)
		}
		id := string(f[0])
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return fr.malformed(line, "movie id %q is not a number", latin1(f[0]))
		}
		if _, dup := idx[id]; dup {
			return fr.malformed(line, "movie id %s appears twice", id)
		}
		fr.fr.Records++
		idx[id] = int32(len(items))
		// The authors strip the title and genres (Python's str.strip()).
		items = append(items, Item{ID: id, Title: pyStrip(latin1(f[1])), Genre: firstGenre(pyStrip(latin1(f[2])))})
		return nil
	})
	rep.ItemsRead = len(items)
	return items, idx, err
}

// firstGenre returns the first "|"-separated genre.
func firstGenre(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '|' {
			return s[:i]
		}
	}
	return s
}

func readML1MRatings(ctx context.Context, path string, opts Options, rep *Report, userIdx, itemIdx map[string]int32) ([]mlRating, error) {
	fr := rep.newFile(path, opts.SkipMalformed)
	ratings := make([]mlRating, 0, ratingsCap(path, 20))
	var f [4][]byte
	err := eachLine(ctx, path, fr, func(line int, b []byte) error {
		if n := splitSep(b, sepColons, f[:]); n != 4 {
			return fr.malformed(line, "want 4 fields (UserID::MovieID::Rating::Timestamp) separated by \"::\", got %d", n)
		}
		r, ok := parseUint(f[2])
		if !ok || r < 1 || r > 5 {
			return fr.malformed(line, "rating %q is not a whole number 1-5", latin1(f[2]))
		}
		t, ok := parseUint(f[3])
		if !ok {
			return fr.malformed(line, "timestamp %q is not a number", latin1(f[3]))
		}
		fr.fr.Records++
		rep.RatingsRead++
		u, ok := userIdx[string(f[0])]
		if !ok {
			rep.unknownUser(fmt.Sprintf("%s:%d: user %s", fr.name, line, latin1(f[0])))
			return nil
		}
		it, ok := itemIdx[string(f[1])]
		if !ok {
			rep.unknownItem(fmt.Sprintf("%s:%d: movie %s", fr.name, line, latin1(f[1])))
			return nil
		}
		ratings = append(ratings, mlRating{time: int64(t), user: u, item: it, rating: float32(r)})
		return nil
	})
	return ratings, err
}

// ratingsCap guesses how many ratings a file holds from its size, so that the
// slice holding them is allocated once: lines are at least minLine bytes.
func ratingsCap(path string, minLine int64) int {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= 0 {
		return 1024
	}
	return int(min(st.Size()/minLine+1, 1<<31-1))
}

// parseUint parses a decimal number of at most 18 digits.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
