package prompt

import (
	"fmt"
	"math"
	"strconv"

	"github.com/rella-project/rella/data"
)

// Defaults returns the default wording for kind: the released demo prompts'
// for ML-1M and the wordings of RELLA.md section 2 for ML-25M and
// BookCrossing. It fails on an unknown kind.
func Defaults(kind data.Kind) (Options, error) {
	o := Options{
		HistoryItem: "{index}. {title} ({rating} {stars})",
		Instruction: "You should ONLY tell me yes or no.",
	}
	switch kind {
	case data.ML1M:
		o.Profile = "The user is a {gender}. {His} job is {occupation}. {His} age is {age}."
		o.HistoryIntro = "{He} watched the following movies in order in the past, and rated them:"
		o.Question = "Based on the movies {he} has watched, deduce if {he} will like the movie ***{title}***."
		o.Note = "Note that more stars the user rated the movie, the user like the movie more."
	case data.ML25M:
		o.Profile = omit
		o.HistoryIntro = "The user watched the following movies in the past, and rated them:"
		o.Question = "Based on the movies the user has watched, deduce if the user will like the movie ***{title}***."
		o.Note = "Note that more stars the user rated the movie, the user liked the movie more."
	case data.BookCrossing:
		o.Profile = "The user's location is {location}. The user's age is {age}."
		o.HistoryIntro = "The user read the following books in the past and rated them:"
		o.Question = "Based on the books the user has read, deduce if the user will like the book ***{title}***."
		o.Note = "Note that more stars the user rated the book, the user liked the book more."
	default:
		return Options{}, fmt.Errorf("prompt: unknown dataset kind %q", kind)
	}
	return o, nil
}

// The lines of a prompt, in order.
const (
	lineProfile = iota
	lineIntro
	lineHistory // the history list: rendered from Builder.item
	lineQuestion
	lineNote
	lineInstruction
	numLines
)

// Builder renders prompts for one dataset kind. It is immutable after New
// and safe for concurrent use.
type Builder struct {
	kind  data.Kind
	lines [numLines]template
	item  template
}

// New returns a builder for kind with opts; empty templates take the kind's
// defaults (see Defaults).
func New(kind data.Kind, opts Options) (*Builder, error) {
	def, err := Defaults(kind)
	if err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	b := &Builder{kind: kind}
	// In the order of Options.fields.
	slots := []*template{&b.lines[lineProfile], &b.lines[lineIntro], &b.item,
		&b.lines[lineQuestion], &b.lines[lineNote], &b.lines[lineInstruction]}
	dfs := def.fields()
	for i, f := range opts.fields() {
		if *f.tmpl == "" {
			*f.tmpl = *dfs[i].tmpl
		}
		t, err := parseTemplate(*f.tmpl, f.allowed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.key, err)
		}
		*slots[i] = t
	}
	return b, nil
}

// Kind returns the dataset kind the builder renders for.
func (b *Builder) Kind() data.Kind { return b.kind }

// Selector picks which history positions (indices into
// ds.Seqs[s.User][:s.Pos]) a prompt shows: at most k of them, in
// chronological (increasing) order, appended to dst[:0].
type Selector interface {
	Select(s data.Sample, k int, dst []int32) []int32
}

// Recent selects the k most recent history positions, oldest first: the
// default history of ReLLa's prompts.
type Recent struct{}

// Select implements Selector.
func (Recent) Select(s data.Sample, k int, dst []int32) []int32 {
	dst = dst[:0]
	from := int(s.Pos) - k
	if from < 0 {
		from = 0
	}
	for p := from; p < int(s.Pos); p++ {
		dst = append(dst, int32(p))
	}
	return dst
}

// Prompt returns the ReLLa prompt for sample s showing the history positions
// hist (indices into ds.Seqs[s.User][:s.Pos], in the order to show), without
// the Vicuna wrapper.
func (b *Builder) Prompt(ds *data.Dataset, s data.Sample, hist []int32) string {
	return string(b.AppendPrompt(make([]byte, 0, 256+64*len(hist)), ds, s, hist))
}

// AppendPrompt appends the prompt of Prompt to dst and returns the extended
// slice; it allocates only when dst must grow.
func (b *Builder) AppendPrompt(dst []byte, ds *data.Dataset, s data.Sample, hist []int32) []byte {
	seq := ds.Seqs[s.User]
	c := ctx{user: &ds.Users[s.User], item: &ds.Items[seq[s.Pos].Item]}
	c.pronouns()
	first := true
	for i := range b.lines {
		if i != lineHistory && b.lines[i].omitted {
			continue
		}
		if !first {
			dst = append(dst, '\n')
		}
		first = false
		if i != lineHistory {
			dst = c.appendTemplate(dst, b.lines[i], b.kind)
			continue
		}
		dst = append(dst, '[')
		for j, p := range hist {
			if j > 0 {
				dst = append(dst, ", "...)
			}
			ev := &seq[p]
			hc := c
			hc.item, hc.index, hc.rating = &ds.Items[ev.Item], j, ev.Rating
			start := len(dst)
			dst = hc.appendTemplate(dst, b.item, b.kind)
			dst = reprInPlace(dst, start)
		}
		dst = append(dst, ']')
	}
	return dst
}

// ctx holds the values of the placeholders while one line is rendered.
type ctx struct {
	user          *data.User
	item          *data.Item
	index         int
	rating        float32
	he, his       string // lower-case pronouns
	heCap, hisCap string
}

// pronouns sets the pronouns from the user's gender.
func (c *ctx) pronouns() {
	switch c.user.Gender {
	case "male":
		c.he, c.heCap, c.his, c.hisCap = "he", "He", "his", "His"
	case "female":
		c.he, c.heCap, c.his, c.hisCap = "she", "She", "her", "Her"
	default:
		c.he, c.heCap, c.his, c.hisCap = "the user", "The user", "the user's", "The user's"
	}
}

// appendTemplate appends t rendered with c's values.
func (c *ctx) appendTemplate(dst []byte, t template, kind data.Kind) []byte {
	for _, sg := range t.segs {
		switch sg.v {
		case varNone:
			dst = append(dst, sg.lit...)
		case varGender:
			dst = append(dst, c.user.Gender...)
		case varAge:
			dst = append(dst, c.user.Age...)
		case varOccupation:
			dst = append(dst, c.user.Occupation...)
		case varLocation:
			dst = append(dst, c.user.Location...)
		case varHe:
			dst = append(dst, c.he...)
		case varHeCap:
			dst = append(dst, c.heCap...)
		case varHis:
			dst = append(dst, c.his...)
		case varHisCap:
			dst = append(dst, c.hisCap...)
		case varTitle:
			dst = append(dst, c.item.Title...)
		case varGenre:
			dst = append(dst, c.item.Genre...)
		case varAuthor:
			dst = append(dst, c.item.Author...)
		case varYear:
			dst = append(dst, c.item.Year...)
		case varPublisher:
			dst = append(dst, c.item.Publisher...)
		case varItemID:
			dst = append(dst, c.item.ID...)
		case varIndex:
			dst = strconv.AppendInt(dst, int64(c.index), 10)
		case varRating:
			dst = appendRating(dst, c.rating, kind)
		case varStars:
			if c.rating <= 1 {
				dst = append(dst, "star"...)
			} else {
				dst = append(dst, "stars"...)
			}
		}
	}
	return dst
}

// appendRating appends r as the authors' prompts print it: an integer for
// ML-1M and BookCrossing (whose files hold integers), a Python float
// ("4.0", "3.5") for ML-25M, whose ratings pandas reads as floats.
// A non-integral rating is always printed as a float.
func appendRating(dst []byte, r float32, kind data.Kind) []byte {
	whole := r == float32(math.Trunc(float64(r))) && math.Abs(float64(r)) < 1e15
	switch {
	case whole && kind != data.ML25M:
		return strconv.AppendInt(dst, int64(r), 10)
	case whole:
		dst = strconv.AppendInt(dst, int64(r), 10)
		return append(dst, ".0"...)
	default:
		// Shortest decimal that reads back as the float32: "3.5", "0.5".
		return strconv.AppendFloat(dst, float64(r), 'f', -1, 32)
	}
}

// Answer returns the training answer for a label: "Yes." for 1, "No." otherwise.
func Answer(label int8) string {
	if label == 1 {
		return "Yes."
	}
	return "No."
}

// VicunaSystem is the system message of the Vicuna v1.1 template.
const VicunaSystem = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions."

// Vicuna wraps a prompt in the Vicuna v1.1 template:
// "{system} USER: {prompt} ASSISTANT:" (no trailing space).
func Vicuna(prompt string) string {
	return VicunaSystem + " USER: " + prompt + " ASSISTANT:"
}

// AppendVicuna appends Vicuna(prompt) to dst without building the string.
func AppendVicuna(dst []byte, prompt []byte) []byte {
	dst = append(dst, VicunaSystem...)
	dst = append(dst, " USER: "...)
	dst = append(dst, prompt...)
	return append(dst, " ASSISTANT:"...)
}

// ItemText returns the SUBR text of an item (RELLA.md section 4.1), not
// wrapped in the Vicuna template.
func ItemText(kind data.Kind, it data.Item) string {
	if kind == data.BookCrossing {
		return "Here is a book. Its title is " + it.Title + ". ISBN of the book is " + it.ID +
			". The author of the book is " + it.Author + ". The publication year of the book is " +
			it.Year + ". Its publisher is " + it.Publisher + "."
	}
	return "Here is a movie. Its title is " + it.Title + ". The movie's genre is " + it.Genre + "."
}
