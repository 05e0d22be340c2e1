package synth

import (
	"bytes"
	"fmt"
	"math/rand/v2"
)

// bookCategories carry BookCrossing's planted signal (the files have no
// genre field: only the title words tell the category), popular first.
var bookCategories = [numSignal]signalGenre{
	{"Mystery", []string{"Murder", "Clue", "Suspect", "Inspector", "Poison", "Witness", "Verdict", "Motive", "Ransom", "Sleuth"}},
	{"Romance", []string{"Kiss", "Heart", "Wedding", "Passion", "Bride", "Lover", "Valentine", "Rose", "Darling", "Embrace"}},
	{"Fantasy", []string{"Dragon", "Wizard", "Sword", "Elven", "Sorcerer", "Kingdom", "Prophecy", "Rune", "Goblin", "Enchantress"}},
	{"Cooking", []string{"Recipe", "Casserole", "Pastry", "Skillet", "Soup", "Baking", "Spice", "Kitchen", "Dumpling", "Roast"}},
	{"Poetry", []string{"Sonnet", "Verse", "Stanza", "Ode", "Haiku", "Elegy", "Rhyme", "Ballad", "Lyric", "Couplet"}},
	{"Physics", []string{"Quantum", "Particle", "Entropy", "Relativity", "Photon", "Neutrino", "Momentum", "Boson", "Plasma", "Gravity"}},
	{"Gardening", []string{"Compost", "Tulip", "Hedge", "Seedling", "Orchard", "Trowel", "Greenhouse", "Perennial", "Mulch", "Bonsai"}},
	{"Chess", []string{"Gambit", "Checkmate", "Bishop", "Endgame", "Castling", "Rook", "Opening", "Pawn", "Stalemate", "Knight"}},
}

var (
	bxFirstNames = []string{"Anna", "John", "José", "Mary", "Pierre", "Ingrid", "Kenji", "Zoë", "SUE", "Ola"}
	bxLastNames  = []string{"Grisham", "Müller", "Leonard", "O'Brien", "Brontë", "Smith", "García", "Lee", "GRAFTON", "Nordmann"}
	bxPublishers = []string{"Penguin Books", "Ballantine Books", "Henry Holt &amp; Company", "Éditions du Seuil",
		"Harper &amp; Row", "Vintage", "Hodder &amp; Stoughton", "n/a"}
	// bxLocations are raw "city, state, country" fields as users typed them
	// (the reader turns each into a country).
	bxLocations = []string{
		"nyc, new york, usa", "stockton, california, usa", "seattle, washington, u s a", "portland, oregon, us",
		"london, england, united kingdom", "leeds, yorkshire, uk", "münchen, bayern, germany",
		"são paulo, são paulo, brazil", "toronto, ontario, canada", `århus, \"n/a\", denmark`,
		"valladolid, castilla y león, spain", "milano, lombardia, italy", "sydney, new south wales, australia",
		"n/a, n/a, n/a", "porto, porto, portugal", "köln, nrw, deutschland", "?, ?, ?", "zürich, zürich, switzerland",
	}
)

// book is one generated book.
type book struct {
	isbn, title, author, year, publisher string // UTF-8
	signal                               int    // index into bookCategories
	invalidISBN                          bool   // the ISBN holds a character besides letters and digits
}

// bxUser is one generated BookCrossing user.
type bxUser struct {
	id       int
	location string // raw location field, UTF-8
	age      string // raw age field: "NULL" or a quoted number's digits
	fav      int    // favourite niche category
}

// bxRating is one generated rating; user indexes the world's users.
type bxRating struct {
	user   int
	isbn   string
	rating int // 0 (implicit) to 10
	known  bool
}

// bookWorld is a generated BookCrossing dataset before encoding. userOrder
// is the order in which users first appear in the ratings file.
type bookWorld struct {
	users     []bxUser
	books     []book
	ratings   []bxRating // grouped by user, in userOrder
	userOrder []int
}

// isbn10 returns the ISBN-10 with the nine digits of n and its check digit.
func isbn10(n int) string {
	s := fmt.Sprintf("%09d", n)
	sum := 0
	for i := 0; i < 9; i++ {
		sum += (i + 1) * int(s[i]-'0')
	}
	c := sum % 11
	if c == 10 {
		return s + "X"
	}
	return s + string(rune('0'+c))
}

// genBookWorld draws a BookCrossing world.
func genBookWorld(o Options) bookWorld {
	rng := newRand(o.Seed, 3)
	var w bookWorld
	usedISBN := make(map[string]bool)
	newISBN := func() string {
		for {
			s := isbn10(rng.IntN(1_000_000_000))
			if !usedISBN[s] {
				usedISBN[s] = true
				return s
			}
		}
	}
	seen := make(map[string]bool)
	bySignal := make([][]int, numSignal)
	for i := 0; i < o.Items; i++ {
		g := i % numSignal
		if i >= numSignal {
			g = rng.IntN(numSignal)
		}
		var title string
		for {
			title = bookTitle(rng, g)
			if !seen[title] {
				break
			}
		}
		seen[title] = true
		b := book{
			isbn:      newISBN(),
			title:     title,
			author:    bxFirstNames[rng.IntN(len(bxFirstNames))] + " " + bxLastNames[rng.IntN(len(bxLastNames))],
			year:      fmt.Sprint(1950 + rng.IntN(55)),
			publisher: bxPublishers[rng.IntN(len(bxPublishers))],
			signal:    g,
		}
		switch rng.IntN(20) {
		case 0:
			b.year = "0"
		case 1:
			b.author = "n/a"
		}
		if i == o.Items-1 && o.Items > numSignal {
			// One ISBN with a hyphen: the reader drops the book and its ratings.
			b.isbn, b.invalidISBN = b.isbn[:4]+"-"+b.isbn[4:9], true
		}
		w.books = append(w.books, b)
		bySignal[g] = append(bySignal[g], i)
	}
	for u := 0; u < o.Users; u++ {
		usr := bxUser{id: u + 1, location: bxLocations[rng.IntN(len(bxLocations))], age: "NULL",
			fav: numPopular + rng.IntN(numSignal-numPopular)}
		switch r := rng.IntN(100); {
		case r < 30:
		case r < 33:
			usr.age = "0"
		case r < 35:
			usr.age = "150"
		default:
			usr.age = fmt.Sprint(10 + rng.IntN(71))
		}
		w.users = append(w.users, usr)
	}
	// Ratings file order: from the middle user on, then wrapping round, as
	// the original file starts at user 276725 and then runs from user 2.
	for i := range w.users {
		w.userOrder = append(w.userOrder, (i+o.Users/2)%o.Users)
	}
	for _, u := range w.userOrder {
		usr := w.users[u]
		n := o.MinRatings + rng.IntN(o.MaxRatings-o.MinRatings+1)
		for _, it := range pickRated(rng, n, o.Items, bySignal[usr.fav]) {
			b := w.books[it]
			r := bxRating{user: u, isbn: b.isbn, known: !b.invalidISBN}
			if rng.IntN(20) == 0 {
				// A book missing from BX-Books.csv, as often in the original.
				r.isbn, r.known = newISBN(), false
			}
			switch {
			case rng.Float64() < pLike(b.signal, usr.fav):
				r.rating = 5 + rng.IntN(6)
			case rng.IntN(10) < 6:
				r.rating = 0
			default:
				r.rating = 1 + rng.IntN(4)
			}
			w.ratings = append(w.ratings, r)
		}
	}
	return w
}

// bookTitle draws a book title of category g, with BookCrossing's quirks:
// backslash-escaped double quotes, HTML entities and Windows-1252 letters.
func bookTitle(rng *rand.Rand, g int) string {
	words := bookCategories[g].words
	a := words[rng.IntN(len(words))]
	b := a
	for b == a {
		b = words[rng.IntN(len(words))]
	}
	switch r := rng.IntN(100); {
	case r < 8:
		return a + "'s " + b
	case r < 13:
		return a + "\u2019s " + b // Windows-1252 0x92
	case r < 18:
		return `\"` + a + `\" ` + b
	case r < 25:
		return a + " &amp; " + b
	case r < 30:
		return "Café " + a + " " + b
	case r < 45:
		return a + " and " + b
	case r < 55:
		return a + ": A " + b + " Novel"
	default:
		return "The " + a + " " + b
	}
}

// WriteBookCrossing writes BX-Users.csv, BX-Books.csv and
// BX-Book-Ratings.csv in Book-Crossing's format (";"-separated, every field
// double-quoted except NULL ages, Windows-1252, "\r\n" line ends, inner
// quotes written \", HTML entities such as &amp; kept) into dir, creating
// it if needed. A few ratings name books missing from BX-Books.csv and one
// book has an ISBN with a hyphen, as in the original files. Each file is
// written atomically.
func WriteBookCrossing(dir string, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	w := genBookWorld(o)
	var users, books, ratings bytes.Buffer
	enc := func(buf *bytes.Buffer, s string) error {
		b, err := cp1252(s)
		if err != nil {
			return err
		}
		buf.Write(b)
		return nil
	}
	users.WriteString("\"User-ID\";\"Location\";\"Age\"\r\n")
	for _, u := range w.users {
		fmt.Fprintf(&users, "\"%d\";\"", u.id)
		if err := enc(&users, u.location); err != nil {
			return err
		}
		if u.age == "NULL" {
			users.WriteString("\";NULL\r\n")
		} else {
			fmt.Fprintf(&users, "\";\"%s\"\r\n", u.age)
		}
	}
	books.WriteString("\"ISBN\";\"Book-Title\";\"Book-Author\";\"Year-Of-Publication\";\"Publisher\";\"Image-URL-S\";\"Image-URL-M\";\"Image-URL-L\"\r\n")
	for _, b := range w.books {
		fmt.Fprintf(&books, "\"%s\";\"", b.isbn)
		for i, f := range []string{b.title, b.author, b.year, b.publisher} {
			if i > 0 {
				books.WriteString("\";\"")
			}
			if err := enc(&books, f); err != nil {
				return err
			}
		}
		const img = "http://images.amazon.com/images/P/"
		fmt.Fprintf(&books, "\";\"%s%s.01.THUMBZZZ.jpg\";\"%s%s.01.MZZZZZZZ.jpg\";\"%s%s.01.LZZZZZZZ.jpg\"\r\n",
			img, b.isbn, img, b.isbn, img, b.isbn)
	}
	ratings.WriteString("\"User-ID\";\"ISBN\";\"Book-Rating\"\r\n")
	for _, r := range w.ratings {
		fmt.Fprintf(&ratings, "\"%d\";\"%s\";\"%d\"\r\n", w.users[r.user].id, r.isbn, r.rating)
	}
	return writeFiles(dir, map[string][]byte{
		"BX-Users.csv": users.Bytes(), "BX-Books.csv": books.Bytes(), "BX-Book-Ratings.csv": ratings.Bytes(),
	}, []string{"BX-Users.csv", "BX-Books.csv", "BX-Book-Ratings.csv"})
}
