package prompt

import (
	"fmt"
	"strings"
)

// omit is the template value that leaves a line out of the prompt.
const omit = "-"

// variable identifies a placeholder.
type variable uint8

const (
	varNone variable = iota // a literal segment
	varGender
	varAge
	varOccupation
	varLocation
	varHe
	varHeCap
	varHis
	varHisCap
	varTitle
	varGenre
	varAuthor
	varYear
	varPublisher
	varItemID
	varIndex
	varRating
	varStars
	numVars
)

// varNames maps placeholder names to variables.
var varNames = map[string]variable{
	"gender": varGender, "age": varAge, "occupation": varOccupation, "location": varLocation,
	"he": varHe, "He": varHeCap, "his": varHis, "His": varHisCap,
	"title": varTitle, "genre": varGenre, "author": varAuthor, "year": varYear,
	"publisher": varPublisher, "item_id": varItemID,
	"index": varIndex, "rating": varRating, "stars": varStars,
}

// varSet is a bit set of variables.
type varSet uint32

func setOf(vs ...variable) varSet {
	var s varSet
	for _, v := range vs {
		s |= 1 << v
	}
	return s
}

func (s varSet) has(v variable) bool { return s&(1<<v) != 0 }

var (
	userVars    = setOf(varGender, varAge, varOccupation, varLocation, varHe, varHeCap, varHis, varHisCap)
	itemVars    = userVars | setOf(varTitle, varGenre, varAuthor, varYear, varPublisher, varItemID)
	historyVars = itemVars | setOf(varIndex, varRating, varStars)
)

// segment is a literal text or a placeholder.
type segment struct {
	lit string
	v   variable
}

// template is a parsed template; nil segs with omitted set means the line is
// left out.
type template struct {
	segs    []segment
	omitted bool
}

// parseTemplate splits s into literals and placeholders, checking each
// placeholder against allowed.
func parseTemplate(s string, allowed varSet) (template, error) {
	if s == omit {
		return template{omitted: true}, nil
	}
	var t template
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.segs = append(t.segs, segment{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '{' && i+1 < len(s) && s[i+1] == '{':
			lit.WriteByte('{')
			i += 2
		case c == '}' && i+1 < len(s) && s[i+1] == '}':
			lit.WriteByte('}')
			i += 2
		case c == '}':
			return template{}, fmt.Errorf("unmatched \"}\" at byte %d (write \"}}\" for a literal brace)", i)
		case c == '{':
			j := strings.IndexByte(s[i+1:], '}')
			if j < 0 {
				return template{}, fmt.Errorf("unclosed \"{\" at byte %d (write \"{{\" for a literal brace)", i)
			}
			name := s[i+1 : i+1+j]
			v, ok := varNames[name]
			if !ok {
				return template{}, fmt.Errorf("unknown placeholder {%s}", name)
			}
			if !allowed.has(v) {
				return template{}, fmt.Errorf("placeholder {%s} is not available in this template", name)
			}
			flush()
			t.segs = append(t.segs, segment{v: v})
			i += j + 2
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	return t, nil
}
