// Package synth writes small seeded datasets in the exact original file
// formats of MovieLens-1M, MovieLens-25M and BookCrossing, so that the real
// readers (package data) parse them: for the quickstart, the tests and
// bad-input checks (see Corrupt).
//
// The MovieLens sets carry a planted preference signal that a small model
// can learn from the prompts alone. Every movie has one "signal" genre (its
// first genre in the file) and a title made of the two words that belong to
// that genre only, in either order, each a single piece of the LLaMA
// tokenizer (e.g. "Happy Party (1987)" for Comedy, "Texas Gun, The (1962)"
// for Western): the genre is a short, fixed cue that a tiny model can pick
// out of a long prompt, and titles of one genre share their words, so that
// even a random model's item embeddings put them close together. The
// popular genres Comedy, Animation and Adventure are liked (rating > 3)
// with probability 0.88 by every user; the niche genres Horror, Western,
// Documentary, War and Film-Noir with probability 0.12, except for one
// niche genre per user, the user's favourite, liked with probability 0.90.
// A user's ratings are drawn 10% from the favourite genre and 90% uniformly
// from all movies, so about a fifth of them are of the favourite genre,
// which shows in the history. BookCrossing books carry the same kind of
// signal through the words of their titles (ten per category).
//
// Same options and seed, same bytes; a different seed gives other files.
package synth

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/rella-project/rella/internal/atomicfile"
)

// Options size a synthetic dataset.
type Options struct {
	Users      int   // number of users
	Items      int   // number of movies or books
	MinRatings int   // fewest ratings per user
	MaxRatings int   // most ratings per user (at most Items)
	Seed       int64 // seed of every random draw
}

// DefaultOptions returns the quickstart size: 120 users with 20 to 40
// ratings each over 150 items (about 3,000 ML-1M samples after the
// five-earlier-ratings rule).
func DefaultOptions() Options {
	return Options{Users: 120, Items: 150, MinRatings: 20, MaxRatings: 40, Seed: 1}
}

// Validate reports every invalid setting.
func (o Options) Validate() error {
	var errs []error
	if o.Users < 1 {
		errs = append(errs, fmt.Errorf("synth: users must be at least 1, got %d", o.Users))
	}
	if o.Items < numSignal {
		errs = append(errs, fmt.Errorf("synth: items must be at least %d (one per signal genre), got %d", numSignal, o.Items))
	}
	if o.MinRatings < 1 {
		errs = append(errs, fmt.Errorf("synth: min ratings must be at least 1, got %d", o.MinRatings))
	}
	if o.MaxRatings < o.MinRatings {
		errs = append(errs, fmt.Errorf("synth: max ratings (%d) must not be below min ratings (%d)", o.MaxRatings, o.MinRatings))
	}
	if o.MaxRatings > o.Items {
		errs = append(errs, fmt.Errorf("synth: max ratings (%d) must not exceed items (%d): a user rates an item once", o.MaxRatings, o.Items))
	}
	return errors.Join(errs...)
}

// The planted signal: probabilities that a rating is positive.
const (
	pPopular   = 0.88 // popular genre, every user
	pFavourite = 0.90 // the user's favourite niche genre
	pNiche     = 0.12 // any other niche genre
	favShare   = 0.10 // share of a user's ratings drawn from the favourite genre
	numPopular = 3    // signal genres 0..2 are popular, the rest niche
	numSignal  = 8    // number of signal genres
)

// signalGenre is a genre (or book category) with its own title words.
type signalGenre struct {
	name  string
	words []string
}

// movieGenres are the signal genres of the MovieLens sets, popular first.
var movieGenres = [numSignal]signalGenre{
	{"Comedy", []string{"Happy", "Party"}},
	{"Animation", []string{"Magic", "Toy"}},
	{"Adventure", []string{"Island", "Ocean"}},
	{"Horror", []string{"Ghost", "Blood"}},
	{"Western", []string{"Gun", "Texas"}},
	{"Documentary", []string{"Science", "Nature"}},
	{"War", []string{"Army", "Battle"}},
	{"Film-Noir", []string{"Police", "City"}},
}

// otherMovieGenres are ML-1M's remaining genres, used as second and third
// genres only.
var otherMovieGenres = []string{"Action", "Children's", "Crime", "Drama", "Fantasy", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller"}

// latinWords hold ISO-8859-1 letters beyond ASCII; a few titles use one.
var latinWords = []string{"Café", "Señor", "Noël", "Über", "Déjà", "Garçon", "Fräulein", "Ångström", "Niño"}

// pLike returns the probability that a user with favourite niche genre fav
// likes an item of signal genre g.
func pLike(g, fav int) float64 {
	switch {
	case g < numPopular:
		return pPopular
	case g == fav:
		return pFavourite
	default:
		return pNiche
	}
}

// newRand returns the generator for one dataset kind; stream separates the
// kinds so that they do not share draws.
func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15^stream))
}

// pickRated chooses n distinct item indices for a user: about favShare of
// them from favItems (while any are left), the rest uniformly from all
// nItems.
func pickRated(rng *rand.Rand, n, nItems int, favItems []int) []int {
	taken := make(map[int]bool, n)
	out := make([]int, 0, n)
	favOrder := rng.Perm(len(favItems)) // favourites in the order they are drawn
	next := 0
	for len(out) < n {
		var it int
		if rng.Float64() < favShare {
			for next < len(favOrder) && taken[favItems[favOrder[next]]] {
				next++
			}
			if next == len(favOrder) {
				continue
			}
			it = favItems[favOrder[next]]
		} else {
			it = rng.IntN(nItems)
			if taken[it] {
				continue
			}
		}
		taken[it] = true
		out = append(out, it)
	}
	return out
}

// writeFiles writes each file of a dataset atomically into dir, creating
// dir if needed.
func writeFiles(dir string, files map[string][]byte, order []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	for _, name := range order {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), files[name]); err != nil {
			return fmt.Errorf("synth: write %s: %w", name, err)
		}
	}
	return nil
}

// latin1 encodes s in ISO-8859-1; every rune of s must be below U+0100.
func latin1(s string) ([]byte, error) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r >= 0x100 {
			return nil, fmt.Errorf("synth: %q: %U is not in ISO-8859-1", s, r)
		}
		b = append(b, byte(r))
	}
	return b, nil
}

// cp1252High maps the Windows-1252 bytes 0x80-0x9f to their runes (0 where
// the byte is undefined).
var cp1252High = [32]rune{
	0x20ac, 0, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017d, 0,
	0, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0, 0x017e, 0x0178,
}

// cp1252 encodes s in Windows-1252.
func cp1252(s string) ([]byte, error) {
	b := make([]byte, 0, len(s))
outer:
	for _, r := range s {
		switch {
		case r < 0x80 || (r >= 0xa0 && r < 0x100):
			b = append(b, byte(r))
			continue
		case r != 0 && r != utf8.RuneError:
			for i, c := range cp1252High {
				if c == r {
					b = append(b, byte(0x80+i))
					continue outer
				}
			}
		}
		return nil, fmt.Errorf("synth: %q: %U is not in Windows-1252", s, r)
	}
	return b, nil
}

// csvQuote quotes a CSV field the way the MovieLens files do: only when it
// holds a comma or a double quote, doubling inner quotes.
func csvQuote(s string) string {
	if !strings.ContainsAny(s, ",\"") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
