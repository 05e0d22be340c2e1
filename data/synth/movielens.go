package synth

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
)

// movie is one generated movie.
type movie struct {
	id     int
	title  string   // UTF-8, with the year, e.g. "Giggle Prank (1987)"
	genres []string // the signal genre first
	signal int      // index into movieGenres; -1 for a movie without genres
}

// mlUser is one generated MovieLens user.
type mlUser struct {
	id     int
	gender string // "M" or "F"
	age    int    // ML-1M age code
	occ    int    // ML-1M occupation code 0..20
	zip    string
	fav    int // favourite niche genre, an index into movieGenres
}

// mlRating is one generated rating; user and movie index the world's slices.
type mlRating struct {
	user, movie int
	rating      float32
	ts          int64
}

// movieWorld is a generated MovieLens dataset before encoding: ratings are
// grouped by user, in the order they were given (time never decreases).
type movieWorld struct {
	users   []mlUser
	movies  []movie
	ratings []mlRating
}

var ml1mAgeCodes = []int{1, 18, 25, 35, 45, 50, 56}

// genMovieWorld draws a MovieLens world. ml25 selects ML-25M's flavour:
// half-star ratings, later timestamps, titles beyond ISO-8859-1 and with
// double quotes, and one movie without genres.
func genMovieWorld(o Options, ml25 bool) movieWorld {
	stream := uint64(1)
	if ml25 {
		stream = 2
	}
	rng := newRand(o.Seed, stream)
	var w movieWorld

	// Movies: ids with gaps (so that string and numeric order differ),
	// every signal genre present, unique titles.
	signals := make([]int, o.Items)
	for i := range signals {
		if i < numSignal {
			signals[i] = i
		} else {
			signals[i] = rng.IntN(numSignal)
		}
	}
	rng.Shuffle(len(signals), func(i, j int) { signals[i], signals[j] = signals[j], signals[i] })
	seen := make(map[string]bool)
	id := 0
	for i := 0; i < o.Items; i++ {
		id++
		if rng.IntN(4) == 0 {
			id += rng.IntN(3)
		}
		g := signals[i]
		var title string
		for {
			title = movieTitle(rng, g, ml25)
			if !seen[title] {
				break
			}
		}
		seen[title] = true
		genres := []string{movieGenres[g].name}
		for _, k := range rng.Perm(len(otherMovieGenres))[:rng.IntN(3)] {
			genres = append(genres, otherMovieGenres[k])
		}
		w.movies = append(w.movies, movie{id: id, title: title, genres: genres, signal: g})
	}
	if ml25 {
		// ML-25M lists some movies with no genres; nobody rates this one.
		w.movies = append(w.movies, movie{id: id + 1, title: "Untitled Reel (2019)", genres: []string{"(no genres listed)"}, signal: -1})
	}
	bySignal := make([][]int, numSignal)
	for i, m := range w.movies[:o.Items] {
		bySignal[m.signal] = append(bySignal[m.signal], i)
	}

	base, span := int64(956703932), int64(2*365*86400) // ML-1M's era
	if ml25 {
		base = 1420070400 // 2015
	}
	for u := 0; u < o.Users; u++ {
		usr := mlUser{
			id:     u + 1,
			gender: "M",
			age:    ml1mAgeCodes[rng.IntN(len(ml1mAgeCodes))],
			occ:    rng.IntN(21),
			zip:    fmt.Sprintf("%05d", rng.IntN(100000)),
			fav:    numPopular + rng.IntN(numSignal-numPopular),
		}
		if rng.IntN(10) < 3 {
			usr.gender = "F"
		}
		if rng.IntN(10) == 0 {
			usr.zip += fmt.Sprintf("-%04d", rng.IntN(10000))
		}
		w.users = append(w.users, usr)
		n := o.MinRatings + rng.IntN(o.MaxRatings-o.MinRatings+1)
		ts := base + rng.Int64N(span)
		for j, it := range pickRated(rng, n, o.Items, bySignal[usr.fav]) {
			if j > 0 && rng.Float64() >= 0.2 { // 20% same-second ties
				ts += 1 + rng.Int64N(2*86400)
			}
			like := rng.Float64() < pLike(w.movies[it].signal, usr.fav)
			var r float32
			switch {
			case ml25 && like:
				r = 3.5 + 0.5*float32(rng.IntN(4))
			case ml25:
				r = 0.5 + 0.5*float32(rng.IntN(6))
			case like:
				r = float32(4 + rng.IntN(2))
			default:
				r = float32(1 + rng.IntN(3))
			}
			w.ratings = append(w.ratings, mlRating{user: u, movie: it, rating: r, ts: ts})
		}
	}
	return w
}

// movieTitle draws a title of signal genre g in MovieLens style.
func movieTitle(rng *rand.Rand, g int, ml25 bool) string {
	words := movieGenres[g].words
	a := words[rng.IntN(len(words))]
	b := a
	for b == a {
		b = words[rng.IntN(len(words))]
	}
	year := 1930 + rng.IntN(71)
	if ml25 {
		year = 1930 + rng.IntN(90)
	}
	var t string
	switch r := rng.IntN(100); {
	case r < 10:
		t = a + "'s " + b
	case r < 25:
		t = a + " " + b + ", The"
	case r < 30:
		t = latinWords[rng.IntN(len(latinWords))] + " " + a + " " + b
	case r < 35 && ml25:
		t = a + ` "` + b + `"`
	case r < 38 && ml25:
		t = "Żółw " + a + " " + b
	case r < 45:
		t = a + " of the " + b
	default:
		t = a + " " + b
	}
	return fmt.Sprintf("%s (%d)", t, year)
}

// WriteML1M writes users.dat, movies.dat and ratings.dat in MovieLens-1M's
// format ("::"-separated, ISO-8859-1, "\n" line ends; ratings grouped by
// user, each user's in shuffled order) into dir, creating it if needed.
// Each file is written atomically.
func WriteML1M(dir string, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	w := genMovieWorld(o, false)
	rng := newRand(o.Seed, 11)
	var users, movies, ratings bytes.Buffer
	for _, u := range w.users {
		fmt.Fprintf(&users, "%d::%s::%d::%d::%s\n", u.id, u.gender, u.age, u.occ, u.zip)
	}
	for _, m := range w.movies {
		title, err := latin1(m.title)
		if err != nil {
			return err
		}
		fmt.Fprintf(&movies, "%d::%s::%s\n", m.id, title, joinGenres(m.genres))
	}
	for _, rs := range byUser(w.ratings) {
		rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
		for _, r := range rs {
			fmt.Fprintf(&ratings, "%d::%d::%d::%d\n", w.users[r.user].id, w.movies[r.movie].id, int(r.rating), r.ts)
		}
	}
	return writeFiles(dir, map[string][]byte{
		"users.dat": users.Bytes(), "movies.dat": movies.Bytes(), "ratings.dat": ratings.Bytes(),
	}, []string{"users.dat", "movies.dat", "ratings.dat"})
}

// WriteML25M writes movies.csv and ratings.csv in MovieLens-25M's format
// (a header line, "\r\n" line ends as in the distributed files, UTF-8,
// titles with a comma or a double quote quoted, half-star ratings written
// "3.5" and "4.0", ratings sorted by user then movie id) into dir, creating
// it if needed. Each file is written atomically.
func WriteML25M(dir string, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	w := genMovieWorld(o, true)
	var movies, ratings bytes.Buffer
	movies.WriteString("movieId,title,genres\r\n")
	for _, m := range w.movies {
		fmt.Fprintf(&movies, "%d,%s,%s\r\n", m.id, csvQuote(m.title), csvQuote(joinGenres(m.genres)))
	}
	ratings.WriteString("userId,movieId,rating,timestamp\r\n")
	for _, rs := range byUser(w.ratings) {
		sort.Slice(rs, func(i, j int) bool { return w.movies[rs[i].movie].id < w.movies[rs[j].movie].id })
		for _, r := range rs {
			fmt.Fprintf(&ratings, "%d,%d,%s,%d\r\n", w.users[r.user].id, w.movies[r.movie].id,
				strconv.FormatFloat(float64(r.rating), 'f', 1, 32), r.ts)
		}
	}
	return writeFiles(dir, map[string][]byte{"movies.csv": movies.Bytes(), "ratings.csv": ratings.Bytes()},
		[]string{"movies.csv", "ratings.csv"})
}

// byUser splits ratings (grouped by user) into per-user copies.
func byUser(rs []mlRating) [][]mlRating {
	var out [][]mlRating
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j].user == rs[i].user {
			j++
		}
		out = append(out, append([]mlRating(nil), rs[i:j]...))
		i = j
	}
	return out
}

func joinGenres(g []string) string {
	var b bytes.Buffer
	for i, s := range g {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(s)
	}
	return b.String()
}
