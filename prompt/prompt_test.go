package prompt

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rella-project/rella/data"
	"go.yaml.in/yaml/v3"
)

// oneUser builds a dataset with one user whose sequence is the items in
// order with the given ratings, the last being the target.
func oneUser(kind data.Kind, u data.User, items []data.Item, ratings []float32) (*data.Dataset, data.Sample) {
	ds := &data.Dataset{Kind: kind, Users: []data.User{u}, Items: items, Seqs: make([][]data.Event, 1)}
	for i, r := range ratings {
		ds.Seqs[0] = append(ds.Seqs[0], data.Event{Item: int32(i), Rating: r, Time: int64(1000 + i)})
	}
	s := data.Sample{User: 0, Pos: int32(len(ratings) - 1), Label: 1}
	ds.Test = []data.Sample{s}
	return ds, s
}

func movies(titles ...string) []data.Item {
	its := make([]data.Item, len(titles))
	for i, t := range titles {
		its[i] = data.Item{ID: fmt.Sprint(i + 1), Title: t, Genre: "Drama"}
	}
	return its
}

func all(s data.Sample) []int32 { return Recent{}.Select(s, int(s.Pos), nil) }

func mustNew(t *testing.T, kind data.Kind, o Options) *Builder {
	t.Helper()
	b, err := New(kind, o)
	if err != nil {
		t.Fatalf("New(%s): %v", kind, err)
	}
	return b
}

// The expected prompts below are written out from RELLA.md section 2 (its
// examples, the released demo's wording) and its rules.
func TestPromptDefaults(t *testing.T) {
	cases := []struct {
		name    string
		kind    data.Kind
		user    data.User
		items   []data.Item
		ratings []float32
		want    string
	}{{
		name:    "ml-1m spec example",
		kind:    data.ML1M,
		user:    data.User{ID: "7", Gender: "male", Age: "25-34", Occupation: "programmer"},
		items:   movies("True Romance (1993)", "Desperado (1995)", "Backdraft (1991)", "Ronin (1998)"),
		ratings: []float32{4, 5, 5, 2},
		want: "The user is a male. His job is programmer. His age is 25-34.\n" +
			"He watched the following movies in order in the past, and rated them:\n" +
			"['0. True Romance (1993) (4 stars)', '1. Desperado (1995) (5 stars)', '2. Backdraft (1991) (5 stars)']\n" +
			"Based on the movies he has watched, deduce if he will like the movie ***Ronin (1998)***.\n" +
			"Note that more stars the user rated the movie, the user like the movie more.\n" +
			"You should ONLY tell me yes or no.",
	}, {
		name:    "ml-1m female, one star, apostrophes, both quotes",
		kind:    data.ML1M,
		user:    data.User{ID: "8", Gender: "female", Age: "under 18", Occupation: "K-12 student"},
		items:   movies("Ulee's Gold (1997)", "Toy Story (1995)", `Say "Hi" 'There' (2001)`, "Fille d'\u00e9t\u00e9, La (1990)", "Shawshank Redemption, The (1994)"),
		ratings: []float32{1, 3, 2, 5, 4},
		want: "The user is a female. Her job is K-12 student. Her age is under 18.\n" +
			"She watched the following movies in order in the past, and rated them:\n" +
			`["0. Ulee's Gold (1997) (1 star)", '1. Toy Story (1995) (3 stars)', '2. Say "Hi" \'There\' (2001) (2 stars)', "3. Fille d'` + "\u00e9t\u00e9" + `, La (1990) (5 stars)"]` + "\n" +
			"Based on the movies she has watched, deduce if she will like the movie ***Shawshank Redemption, The (1994)***.\n" +
			"Note that more stars the user rated the movie, the user like the movie more.\n" +
			"You should ONLY tell me yes or no.",
	}, {
		name:    "ml-1m empty history, apostrophe target (not quoted)",
		kind:    data.ML1M,
		user:    data.User{ID: "9", Gender: "male", Age: "above 56", Occupation: "retired"},
		items:   movies("Schindler's List (1993)"),
		ratings: []float32{5},
		want: "The user is a male. His job is retired. His age is above 56.\n" +
			"He watched the following movies in order in the past, and rated them:\n" +
			"[]\n" +
			"Based on the movies he has watched, deduce if he will like the movie ***Schindler's List (1993)***.\n" +
			"Note that more stars the user rated the movie, the user like the movie more.\n" +
			"You should ONLY tell me yes or no.",
	}, {
		name:    "ml-25m spec example plus halves",
		kind:    data.ML25M,
		user:    data.User{ID: "1", Age: "unknown"},
		items:   movies("Heat (1995)", "Fargo (1996)", "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)", "Up (2009)", "Alien (1979)", "Casino (1995)"),
		ratings: []float32{4, 0.5, 3.5, 1, 1.5, 5},
		want: "The user watched the following movies in the past, and rated them:\n" +
			`['0. Heat (1995) (4.0 stars)', '1. Fargo (1996) (0.5 star)', "2. Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001) (3.5 stars)", '3. Up (2009) (1.0 star)', '4. Alien (1979) (1.5 stars)']` + "\n" +
			"Based on the movies the user has watched, deduce if the user will like the movie ***Casino (1995)***.\n" +
			"Note that more stars the user rated the movie, the user liked the movie more.\n" +
			"You should ONLY tell me yes or no.",
	}, {
		name: "bookcrossing spec example plus 1 and 10 stars, HTML entity",
		kind: data.BookCrossing,
		user: data.User{ID: "276725", Age: "25-29", Location: "USA"},
		items: []data.Item{
			{ID: "0399135782", Title: "The Firm", Author: "John Grisham", Year: "1991", Publisher: "Putnam"},
			{ID: "0385504209", Title: "Be Cool", Author: "Elmore Leonard", Year: "1999", Publisher: "Delacorte"},
			{ID: "0451166892", Title: "Dr. Jekyll &amp; Mr. Hyde", Author: "unknown", Year: "unknown", Publisher: "unknown"},
			{ID: "067976402X", Title: "Snow Falling on Cedars", Author: "David Guterson", Year: "1995", Publisher: "Vintage"},
			{ID: "0060928336", Title: "Naked", Author: "David Sedaris", Year: "1998", Publisher: "Back Bay"},
		},
		ratings: []float32{0, 7, 1, 10, 8},
		want: "The user's location is USA. The user's age is 25-29.\n" +
			"The user read the following books in the past and rated them:\n" +
			"['0. The Firm (0 star)', '1. Be Cool (7 stars)', '2. Dr. Jekyll &amp; Mr. Hyde (1 star)', '3. Snow Falling on Cedars (10 stars)']\n" +
			"Based on the books the user has read, deduce if the user will like the book ***Naked***.\n" +
			"Note that more stars the user rated the book, the user liked the book more.\n" +
			"You should ONLY tell me yes or no.",
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, s := oneUser(c.kind, c.user, c.items, c.ratings)
			b := mustNew(t, c.kind, DefaultOptions())
			if got := b.Prompt(ds, s, all(s)); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
			prefix := []byte("prefix|")
			if got := string(b.AppendPrompt(prefix, ds, s, all(s))); got != "prefix|"+c.want {
				t.Errorf("AppendPrompt after a prefix: got\n%s", got)
			}
		})
	}
}

func TestRecent(t *testing.T) {
	cases := []struct {
		pos, k int
		want   []int32
	}{{10, 3, []int32{7, 8, 9}}, {3, 5, []int32{0, 1, 2}}, {5, 5, []int32{0, 1, 2, 3, 4}}, {4, 0, nil}, {0, 5, nil}}
	for _, c := range cases {
		got := Recent{}.Select(data.Sample{Pos: int32(c.pos)}, c.k, make([]int32, 7))
		if fmt.Sprint(got) != fmt.Sprint(c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("Recent pos %d k %d: got %v, want %v", c.pos, c.k, got, c.want)
		}
	}
}

// TestPromptMatchesPyRepr renders random histories, titles full of quotes,
// backslashes and odd characters, and checks the history line against
// PyRepr of the items formatted separately, for every position of the
// in-place rendering inside a prefilled buffer.
func TestPromptMatchesPyRepr(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", " ", "'", `"`, `\`, "\n", "\t", "\u00e9", "\u00a0", "\U0001F600", "\x01", ",", "(", "{", "}"}
	var items []data.Item
	for i := 0; i < 50; i++ {
		var sb strings.Builder
		for j := rng.IntN(12); j >= 0; j-- {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		items = append(items, data.Item{ID: fmt.Sprint(i), Title: sb.String()})
	}
	ds := &data.Dataset{Kind: data.ML25M, Users: []data.User{{ID: "u"}}, Items: items, Seqs: [][]data.Event{nil}}
	for i := 0; i < 40; i++ {
		ds.Seqs[0] = append(ds.Seqs[0], data.Event{Item: int32(rng.IntN(len(items))), Rating: float32(rng.IntN(10)+1) / 2})
	}
	b := mustNew(t, data.ML25M, Options{Profile: "-", HistoryIntro: "-", Question: "-", Note: "-", Instruction: "-"})
	for trial := 0; trial < 200; trial++ {
		s := data.Sample{Pos: int32(rng.IntN(40))}
		hist := Recent{}.Select(s, rng.IntN(16), nil)
		var strs []string
		for j, p := range hist {
			ev := ds.Seqs[0][p]
			stars := "stars"
			if ev.Rating <= 1 {
				stars = "star"
			}
			r := fmt.Sprintf("%g", ev.Rating)
			if !strings.Contains(r, ".") {
				r += ".0"
			}
			strs = append(strs, fmt.Sprintf("%d. %s (%s %s)", j, items[ev.Item].Title, r, stars))
		}
		want := PyRepr(strs)
		dst := make([]byte, rng.IntN(5), rng.IntN(300)+5)
		got := string(b.AppendPrompt(dst, ds, s, hist)[len(dst):])
		if got != want {
			t.Fatalf("trial %d: got\n%s\nwant\n%s", trial, got, want)
		}
	}
}

func TestAppendPromptAllocations(t *testing.T) {
	ds, s := oneUser(data.ML1M, data.User{Gender: "female", Age: "18-24", Occupation: "writer"},
		movies("Ulee's Gold (1997)", "Heat (1995)", "Fargo (1996)"), []float32{4, 1, 3})
	b := mustNew(t, data.ML1M, DefaultOptions())
	hist := all(s)
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = b.AppendPrompt(buf[:0], ds, s, hist) }); n != 0 {
		t.Errorf("AppendPrompt allocated %v times per run, want 0", n)
	}
}

func TestCustomTemplates(t *testing.T) {
	ds, s := oneUser(data.ML1M, data.User{Gender: "", Age: "35-44", Occupation: "writer"},
		[]data.Item{{ID: "1", Title: "Heat (1995)", Genre: "Action"}, {ID: "2", Title: "Fargo (1996)", Genre: "Crime"}}, []float32{4, 2})
	b := mustNew(t, data.ML1M, Options{
		Profile:     "{His} age is {age}; {he} is {{not}} {gender}known.",
		HistoryItem: "{title} [{genre}, id {item_id}] {rating}/5",
		Question:    "Will {he} like {title} ({genre})?",
		Note:        "-",
		Instruction: "Answer yes or no.",
	})
	// No gender: the pronouns read "the user"; the intro keeps its default.
	want := "The user's age is 35-44; the user is {not} known.\n" +
		"The user watched the following movies in order in the past, and rated them:\n" +
		"['Heat (1995) [Action, id 1] 4/5']\n" +
		"Will the user like Fargo (1996) (Crime)?\n" +
		"Answer yes or no."
	if got := b.Prompt(ds, s, all(s)); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		o    Options
		want string // substring of the error; "" for valid
	}{
		{DefaultOptions(), ""},
		{Options{Note: "Stars {{like}} this}}"}, ""},
		{Options{Note: "Note {foo}."}, "prompt.note: unknown placeholder {foo}"},
		{Options{Profile: "{rating}"}, "prompt.profile: placeholder {rating} is not available"},
		{Options{Question: "{index}"}, "prompt.question: placeholder {index} is not available"},
		{Options{Instruction: "{title}"}, "prompt.instruction: placeholder {title} is not available"},
		{Options{HistoryIntro: "open {gender"}, "prompt.history_intro: unclosed \"{\" at byte 5"},
		{Options{Question: "x } y"}, "prompt.question: unmatched \"}\" at byte 2"},
		{Options{HistoryItem: "-"}, "prompt.history_item: \"-\" is not allowed"},
		{Options{HistoryItem: "{Title}"}, "prompt.history_item: unknown placeholder {Title}"},
	}
	for _, c := range cases {
		err := c.o.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", c.o, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: got error %v, want one containing %q", c.o, err, c.want)
		}
		if _, nerr := New(data.ML1M, c.o); (nerr == nil) != (c.want == "") {
			t.Errorf("New with %+v: error %v", c.o, nerr)
		}
	}
	// Two bad fields are both reported.
	err := Options{Note: "{a}", Question: "{b}"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "prompt.note") || !strings.Contains(err.Error(), "prompt.question") {
		t.Errorf("got %v, want errors for prompt.note and prompt.question", err)
	}
	if _, err := New("ml-100k", DefaultOptions()); err == nil {
		t.Error("New accepted an unknown dataset kind")
	}
}

func TestAnswerVicunaItemText(t *testing.T) {
	if Answer(1) != "Yes." || Answer(0) != "No." {
		t.Errorf("Answer: got %q %q", Answer(1), Answer(0))
	}
	want := "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: Q? ASSISTANT:"
	if got := Vicuna("Q?"); got != want {
		t.Errorf("Vicuna: got %q", got)
	}
	if got := string(AppendVicuna([]byte("x"), []byte("Q?"))); got != "x"+want {
		t.Errorf("AppendVicuna: got %q", got)
	}
	mv := data.Item{ID: "1", Title: "Toy Story (1995)", Genre: "Animation"}
	if got, want := ItemText(data.ML1M, mv), "Here is a movie. Its title is Toy Story (1995). The movie's genre is Animation."; got != want {
		t.Errorf("ItemText ml-1m: got %q", got)
	}
	if got, want := ItemText(data.ML25M, mv), "Here is a movie. Its title is Toy Story (1995). The movie's genre is Animation."; got != want {
		t.Errorf("ItemText ml-25m: got %q", got)
	}
	bk := data.Item{ID: "0195153448", Title: "Classical Mythology", Author: "Mark P. O. Morford", Year: "2002", Publisher: "Oxford University Press"}
	if got, want := ItemText(data.BookCrossing, bk), "Here is a book. Its title is Classical Mythology. ISBN of the book is 0195153448. The author of the book is Mark P. O. Morford. The publication year of the book is 2002. Its publisher is Oxford University Press."; got != want {
		t.Errorf("ItemText bookcrossing: got %q", got)
	}
}

// TestOptionsYAML decodes a `prompt:` section strictly, as the configs
// package does, so the yaml keys are the ones Validate names.
func TestOptionsYAML(t *testing.T) {
	var cfg struct {
		Prompt Options `yaml:"prompt"`
	}
	src := "prompt:\n  profile: \"-\"\n  history_intro: a\n  history_item: \"{index}: {title}\"\n  question: q {title}\n  note: n\n  instruction: i\n"
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	want := Options{Profile: "-", HistoryIntro: "a", HistoryItem: "{index}: {title}", Question: "q {title}", Note: "n", Instruction: "i"}
	if cfg.Prompt != want {
		t.Errorf("got %+v, want %+v", cfg.Prompt, want)
	}
	dec = yaml.NewDecoder(strings.NewReader("prompt:\n  notes: x\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil {
		t.Error("unknown key prompt.notes accepted")
	}
}
