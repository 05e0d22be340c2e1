package prompt

import (
	"errors"
	"fmt"
)

// Options holds the prompt templates, decoded from the `prompt:` section of a
// run configuration. Every field is a template with {name} placeholders; an
// empty field means the dataset's default wording (see Defaults), and the
// value "-" leaves that line out of the prompt. "{{" and "}}" write literal
// braces.
//
// The lines of a prompt, joined by "\n" with no trailing newline, are:
// Profile, HistoryIntro, the history list (Python repr() of the rendered
// HistoryItem strings), Question, Note, Instruction.
//
// Placeholders:
//   - everywhere: {gender} {age} {occupation} {location} (the user's profile;
//     empty where the dataset lacks the field) and the pronouns {he} {He}
//     {his} {His}, which read he/she, his/her for ML-1M users with a gender
//     and "the user"/"the user's" otherwise;
//   - in question and history_item, the item's fields: {title} {genre}
//     {author} {year} {publisher} {item_id} (the movie id or ISBN); in
//     question they describe the target item;
//   - in history_item only: {index} (0-based position in the list),
//     {rating} (as in the file: "4" for ML-1M and BookCrossing, a Python
//     float such as "4.0" or "3.5" for ML-25M) and {stars} ("star" when the
//     rating is at most 1, else "stars").
type Options struct {
	Profile      string `yaml:"profile"`       // user profile line; "-" for none (the ML-25M default)
	HistoryIntro string `yaml:"history_intro"` // line before the history list
	HistoryItem  string `yaml:"history_item"`  // one element of the history list
	Question     string `yaml:"question"`      // the question about the target item
	Note         string `yaml:"note"`          // the "Note that more stars ..." line
	Instruction  string `yaml:"instruction"`   // the answer-format instruction
}

// DefaultOptions returns options that use every dataset's default wording
// (all templates empty).
func DefaultOptions() Options { return Options{} }

// fields lists the templates of o with their dotted config keys and the
// placeholders each may use.
func (o *Options) fields() []field {
	return []field{
		{"prompt.profile", &o.Profile, userVars},
		{"prompt.history_intro", &o.HistoryIntro, userVars},
		{"prompt.history_item", &o.HistoryItem, historyVars},
		{"prompt.question", &o.Question, itemVars},
		{"prompt.note", &o.Note, userVars},
		{"prompt.instruction", &o.Instruction, userVars},
	}
}

type field struct {
	key     string
	tmpl    *string
	allowed varSet
}

// Validate checks every template: braces balanced, placeholders known and
// allowed in that field. Errors name the dotted key, e.g.
// "prompt.note: unknown placeholder {foo}".
func (o Options) Validate() error {
	var errs []error
	for _, f := range o.fields() {
		if f.key == "prompt.history_item" && *f.tmpl == omit {
			errs = append(errs, fmt.Errorf("%s: %q is not allowed here (the history list cannot be left out)", f.key, omit))
			continue
		}
		if _, err := parseTemplate(*f.tmpl, f.allowed); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.key, err))
		}
	}
	return errors.Join(errs...)
}
