// Package data reads the original MovieLens-1M, MovieLens-25M and
// BookCrossing files and turns them into ReLLa's CTR samples
// (RELLA.md section 1).
package data

// Kind names a dataset.
type Kind string

// The datasets rella knows.
const (
	ML1M         Kind = "ml-1m"
	ML25M        Kind = "ml-25m"
	BookCrossing Kind = "bookcrossing"
)

// User is a user's profile as the prompts show it. Fields a dataset lacks are empty.
type User struct {
	ID         string
	Gender     string // "male" or "female" (ML-1M)
	Age        string // age text or bucket ("25-34", "unknown")
	Occupation string // occupation text (ML-1M)
	Zip        string // zip code as in users.dat (ML-1M; the prompts do not show it, the ID baselines use it)
	Location   string // country (BookCrossing)
}

// Item is a movie or a book.
type Item struct {
	ID        string // movie id, or ISBN
	Title     string
	Genre     string // first genre (movies)
	Author    string // books
	Year      string // books
	Publisher string // books
}

// Event is one rating in a user's sequence.
type Event struct {
	Item   int32   // index into Dataset.Items
	Rating float32 // as in the file (ML-25M has halves)
	Time   int64   // unix seconds (0 where the dataset has none)
}

// Sample is one CTR sample: the event Seqs[User][Pos] is the target and
// Seqs[User][:Pos] its history, oldest first.
type Sample struct {
	User  int32
	Pos   int32
	Label int8
}

// Dataset is a prepared dataset: profiles, items, per-user sequences and the
// three splits in their canonical order.
type Dataset struct {
	Kind  Kind
	Users []User
	Items []Item
	Seqs  [][]Event // indexed like Users
	Train []Sample
	Valid []Sample
	Test  []Sample
}
