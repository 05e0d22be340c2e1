package tokenizer

import (
	"errors"
	"math"
	"slices"
	"unicode/utf8"

	sugar "github.com/sugarme/tokenizer"
)

// pieceKind is the type of a vocabulary piece, as SentencePiece names it.
type pieceKind uint8

const (
	kindNormal      pieceKind = 1
	kindUnknown     pieceKind = 2
	kindControl     pieceKind = 3
	kindUserDefined pieceKind = 4
	kindUnused      pieceKind = 5
	kindByte        pieceKind = 6
)

// merge is what joining two adjacent symbols produces: the new symbol's id
// and the priority of the join (lower rank is applied first).
type merge struct {
	rank int32
	id   int32
}

// pairKey packs the ids of a left and a right symbol.
func pairKey(left, right int32) uint64 { return uint64(uint32(left))<<32 | uint64(uint32(right)) }

// heapThreshold is the symbol count from which a word is merged with a
// priority queue instead of repeated linear scans.
const heapThreshold = 48

// model is the SentencePiece-BPE model: a vocabulary, the table of allowed
// joins with their priorities, and the byte-fallback table. It is read-only
// after construction and safe for concurrent use.
//
// It implements sugarme/tokenizer's Model interface, so it plugs into that
// library's pipeline (see Tokenizer.Pipeline).
//
// Encoding one word follows SentencePiece's bpe_model.cc: the word is cut
// into characters; then, repeatedly, of all adjacent symbol pairs whose join
// is allowed, the one with the best priority is joined, the leftmost one on a
// tie; symbols that are not pieces at the end (characters outside the
// vocabulary) become their UTF-8 bytes as <0xXX> pieces (byte fallback) or
// <unk>.
type model struct {
	pieces []string         // id -> piece
	kinds  []pieceKind      // id -> kind
	lookup map[string]int32 // every piece -> id (first id on duplicates)

	// symbols a character starts as: ASCII by table, the rest by map. A
	// character that is not a piece itself but occurs inside pieces gets a
	// virtual id >= len(pieces), so that joins through it stay possible.
	ascii [128]int32
	chars map[rune]int32

	merges map[uint64]merge

	byteFallback bool
	byteIDs      [256]int32 // -1 where the byte piece is missing
	unk          int32
	fuseUnk      bool // join consecutive <unk> from unknown characters into one

	escapeSpaces bool  // ' ' stands for U+2581 ("▁")
	spaceID      int32 // the symbol of "▁" (or -1)

	// splitWords is true when no joinable piece has "▁" after a character
	// other than "▁": then text can be cut before every such "▁" and each
	// part encoded on its own with the same result.
	splitWords bool
}

const wsPiece = "\u2581"

// newModel builds a model from pieces (id order) and their kinds. joins lists
// the allowed joins: for SentencePiece models nil, meaning every split of a
// normal piece into two symbols, ranked by the piece's score; for HF models
// the merges in rank order.
func newModel(pieces []string, kinds []pieceKind, scores []float32, joins [][2]string, byteFallback, fuseUnk, escapeSpaces bool, unk int) (*model, error) {
	m := &model{
		pieces:       pieces,
		kinds:        kinds,
		lookup:       make(map[string]int32, len(pieces)),
		chars:        make(map[rune]int32),
		byteFallback: byteFallback,
		fuseUnk:      fuseUnk,
		escapeSpaces: escapeSpaces,
		unk:          int32(unk),
		spaceID:      -1,
	}
	for i := range m.byteIDs {
		m.byteIDs[i] = -1
	}
	for i := range m.ascii {
		m.ascii[i] = -1
	}
	joinable := make(map[string]int32, len(pieces)) // pieces a merge may produce or start from
	for i, p := range pieces {
		if _, dup := m.lookup[p]; !dup {
			m.lookup[p] = int32(i)
		}
		switch kinds[i] {
		case kindNormal, kindUserDefined, kindUnused:
			if _, dup := joinable[p]; !dup {
				joinable[p] = int32(i)
			}
		case kindByte:
			if b, ok := parseBytePiece(p); ok {
				m.byteIDs[b] = int32(i)
			}
		}
	}
	if byteFallback {
		for b, id := range m.byteIDs {
			if id < 0 {
				return nil, errors.New("byte fallback is on but piece " + bytePiece(byte(b)) + " is missing")
			}
		}
	}
	if unk < 0 || unk >= len(pieces) {
		return nil, errors.New("no <unk> piece")
	}
	// symbol ids of single characters
	nextVirtual := int32(len(pieces))
	charID := func(r rune, create bool) int32 {
		if r < 128 {
			if m.ascii[r] >= 0 || !create {
				return m.ascii[r]
			}
			m.ascii[r] = nextVirtual
		} else {
			if id, ok := m.chars[r]; ok || !create {
				if !ok {
					return -1
				}
				return id
			}
			m.chars[r] = nextVirtual
		}
		nextVirtual++
		return nextVirtual - 1
	}
	for p, id := range joinable {
		if r, size := utf8.DecodeRuneInString(p); size == len(p) && r != utf8.RuneError {
			if r < 128 {
				m.ascii[r] = id
			} else {
				m.chars[r] = id
			}
		}
	}
	// symbol id of a string that is a piece or a single character
	symbolID := func(s string, create bool) int32 {
		if id, ok := joinable[s]; ok {
			return id
		}
		if r, size := utf8.DecodeRuneInString(s); size == len(s) && r != utf8.RuneError {
			return charID(r, create)
		}
		return -1
	}
	m.merges = make(map[uint64]merge, len(pieces)*2)
	if joins == nil {
		// SentencePiece: any two symbols whose concatenation is a piece
		// join, with that piece's score as priority. Scores are turned into
		// ranks that keep equal scores equal, so ties fall to position.
		rankOf := scoreRanks(scores, kinds)
		for p, id := range joinable {
			if kinds[id] != kindNormal { // user-defined pieces never come from joins
				continue
			}
			for k := range p {
				if k == 0 {
					continue
				}
				l, r := symbolID(p[:k], true), symbolID(p[k:], true)
				if l < 0 || r < 0 {
					continue
				}
				m.merges[pairKey(l, r)] = merge{rank: rankOf[id], id: id}
			}
		}
	} else {
		for i, j := range joins {
			res, ok := joinable[j[0]+j[1]]
			if !ok {
				return nil, errors.New("merge " + j[0] + " " + j[1] + ": result is not in the vocabulary")
			}
			l, r := symbolID(j[0], false), symbolID(j[1], false)
			if l < 0 || r < 0 {
				return nil, errors.New("merge " + j[0] + " " + j[1] + ": a part is not in the vocabulary")
			}
			k := pairKey(l, r)
			if _, dup := m.merges[k]; !dup {
				m.merges[k] = merge{rank: int32(i), id: res}
			}
		}
	}
	if id, ok := joinable[wsPiece]; ok {
		m.spaceID = id
	}
	// word splitting is exact when no joinable piece continues past a
	// non-"▁" character into a "▁".
	m.splitWords = true
	for p := range joinable {
		seenOther := false
		for _, r := range p {
			if r == '\u2581' && seenOther {
				m.splitWords = false
			}
			if r != '\u2581' {
				seenOther = true
			}
		}
	}
	return m, nil
}

// scoreRanks maps each piece's score to its rank among the distinct scores
// of normal pieces, best (highest) first.
func scoreRanks(scores []float32, kinds []pieceKind) []int32 {
	distinct := make(map[float32]struct{})
	for i, s := range scores {
		if kinds[i] == kindNormal {
			distinct[s] = struct{}{}
		}
	}
	vals := make([]float64, 0, len(distinct))
	for s := range distinct {
		vals = append(vals, float64(s))
	}
	slices.Sort(vals)
	slices.Reverse(vals)
	rank := make(map[float32]int32, len(vals))
	for i, v := range vals {
		rank[float32(v)] = int32(i)
	}
	out := make([]int32, len(scores))
	for i, s := range scores {
		out[i] = rank[s]
	}
	return out
}

// parseBytePiece reads "<0xAB>".
func parseBytePiece(p string) (byte, bool) {
	if len(p) != 6 || p[:3] != "<0x" || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexVal(p[3])
	lo, ok2 := hexVal(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func bytePiece(b byte) string {
	const hex = "0123456789ABCDEF"
	return "<0x" + string([]byte{hex[b>>4], hex[b&15]}) + ">"
}

// symbol is one element of the doubly linked list a word is merged in.
type symbol struct {
	id         int32 // piece or virtual id; -1 for a character outside the vocabulary
	start, end int32 // byte range in the word
	prev, next int32 // neighbours, -1 at the ends
}

// work holds the scratch space of one encoding; pooled by the Tokenizer.
type work struct {
	syms  []symbol
	ranks []int32 // ranks[i]: the rank of joining i with its next symbol
	heap  []heapItem
}

type heapItem struct {
	rank        int32
	left, right int32 // symbol indices
	lid, rid    int32 // their ids when pushed (stale check)
	res         int32
}

const noRank = math.MaxInt32

// charSymbol returns the starting symbol id of rune r.
func (m *model) charSymbol(r rune) int32 {
	if r == ' ' && m.escapeSpaces {
		return m.spaceID
	}
	if r < 128 && r >= 0 {
		return m.ascii[r]
	}
	if id, ok := m.chars[r]; ok {
		return id
	}
	return -1
}

// encodeWord appends the ids of word (normalized text: ' ' means "▁" when
// spaces are escaped) to out.
func (m *model) encodeWord(w *work, word string, out []int) []int {
	return m.encodeWordWith(w, word, out, false)
}

// encodeWordWith is encodeWord; forceHeap selects the priority-queue merge
// whatever the word's length (tests compare both merges).
func (m *model) encodeWordWith(w *work, word string, out []int, forceHeap bool) []int {
	syms := w.syms[:0]
	for i := 0; i < len(word); {
		r, size := utf8.DecodeRuneInString(word[i:])
		id := int32(-1)
		if !(r == utf8.RuneError && size == 1) {
			id = m.charSymbol(r)
		}
		n := int32(len(syms))
		syms = append(syms, symbol{id: id, start: int32(i), end: int32(i + size), prev: n - 1, next: n + 1})
		i += size
	}
	if len(syms) == 0 {
		w.syms = syms
		return out
	}
	syms[len(syms)-1].next = -1
	w.syms = syms
	if forceHeap || len(syms) >= heapThreshold {
		m.mergeHeap(w)
	} else {
		m.mergeScan(w)
	}
	return m.emit(w.syms, word, out)
}

// lookupJoin returns the join of symbols a and b, if allowed.
func (m *model) lookupJoin(a, b int32) (merge, bool) {
	if a < 0 || b < 0 {
		return merge{}, false
	}
	j, ok := m.merges[pairKey(a, b)]
	return j, ok
}

// mergeScan merges by repeated linear scans: fast for short words.
func (m *model) mergeScan(w *work) {
	syms := w.syms
	if cap(w.ranks) < len(syms) {
		w.ranks = make([]int32, len(syms), 2*len(syms))
	}
	ranks := w.ranks[:len(syms)]
	for i := range syms {
		ranks[i] = noRank
		if syms[i].next >= 0 {
			if j, ok := m.lookupJoin(syms[i].id, syms[i+1].id); ok {
				ranks[i] = j.rank
			}
		}
	}
	for {
		best, bestRank := int32(-1), int32(noRank)
		for i := int32(0); i >= 0; i = syms[i].next {
			if ranks[i] < bestRank {
				best, bestRank = i, ranks[i]
			}
		}
		if best < 0 {
			return
		}
		right := syms[best].next
		j, _ := m.lookupJoin(syms[best].id, syms[right].id)
		syms[best].id = j.id
		syms[best].end = syms[right].end
		syms[best].next = syms[right].next
		if syms[right].next >= 0 {
			syms[syms[right].next].prev = best
		}
		syms[right].id = -2 // dead
		ranks[right] = noRank
		ranks[best] = noRank
		if n := syms[best].next; n >= 0 {
			if j, ok := m.lookupJoin(syms[best].id, syms[n].id); ok {
				ranks[best] = j.rank
			}
		}
		if p := syms[best].prev; p >= 0 {
			ranks[p] = noRank
			if j, ok := m.lookupJoin(syms[p].id, syms[best].id); ok {
				ranks[p] = j.rank
			}
		}
	}
}

// mergeHeap merges with a priority queue ordered by (rank, left index), the
// way SentencePiece's agenda is; stale entries are skipped when popped.
func (m *model) mergeHeap(w *work) {
	syms := w.syms
	h := w.heap[:0]
	push := func(l, r int32) {
		j, ok := m.lookupJoin(syms[l].id, syms[r].id)
		if !ok {
			return
		}
		h = append(h, heapItem{rank: j.rank, left: l, right: r, lid: syms[l].id, rid: syms[r].id, res: j.id})
		heapUp(h, len(h)-1)
	}
	for i := 0; i+1 < len(syms); i++ {
		push(int32(i), int32(i+1))
	}
	for len(h) > 0 {
		top := h[0]
		last := len(h) - 1
		h[0] = h[last]
		h = h[:last]
		if len(h) > 0 {
			heapDown(h, 0)
		}
		l, r := top.left, top.right
		if syms[l].id != top.lid || syms[r].id != top.rid || syms[l].next != r {
			continue
		}
		syms[l].id = top.res
		syms[l].end = syms[r].end
		syms[l].next = syms[r].next
		if syms[r].next >= 0 {
			syms[syms[r].next].prev = l
		}
		syms[r].id = -2
		if p := syms[l].prev; p >= 0 {
			push(p, l)
		}
		if n := syms[l].next; n >= 0 {
			push(l, n)
		}
	}
	w.heap = h
}

func heapLess(a, b heapItem) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.left < b.left)
}

func heapUp(h []heapItem, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !heapLess(h[i], h[p]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func heapDown(h []heapItem, i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		s := l
		if r := l + 1; r < n && heapLess(h[r], h[l]) {
			s = r
		}
		if !heapLess(h[s], h[i]) {
			return
		}
		h[i], h[s] = h[s], h[i]
		i = s
	}
}

// emit appends the ids of the merged symbols, applying byte fallback to
// symbols that are not pieces.
func (m *model) emit(syms []symbol, word string, out []int) []int {
	lastUnk := false
	for i := int32(0); i >= 0; i = syms[i].next {
		s := syms[i]
		if s.id >= 0 && int(s.id) < len(m.pieces) {
			out = append(out, int(s.id))
			lastUnk = false
			continue
		}
		if m.byteFallback {
			for k := s.start; k < s.end; k++ {
				out = append(out, int(m.byteIDs[word[k]]))
			}
			continue
		}
		if !(m.fuseUnk && lastUnk) {
			out = append(out, int(m.unk))
		}
		lastUnk = true
	}
	return out
}

// isSpace reports whether the rune at the start of s is the whitespace
// symbol ("▁", or ' ' when spaces are escaped), and its size.
func (m *model) isSpace(s string) (bool, int) {
	if s[0] == ' ' && m.escapeSpaces {
		return true, 1
	}
	if len(s) >= 3 && s[0] == 0xE2 && s[1] == 0x96 && s[2] == 0x81 {
		return true, 3
	}
	return false, 1
}

// nextWord returns the length of the first word of s: a run of whitespace
// symbols and the characters up to the next whitespace symbol that follows
// a non-whitespace character. Without word splitting it is all of s.
func (m *model) nextWord(s string) int {
	if !m.splitWords {
		return len(s)
	}
	i := 0
	for i < len(s) {
		ws, n := m.isSpace(s[i:])
		if !ws {
			break
		}
		i += n
	}
	for i < len(s) {
		ws, n := m.isSpace(s[i:])
		if ws {
			return i
		}
		i += n
	}
	return i
}

// Tokenize implements sugarme/tokenizer's Model: it encodes an already
// normalized sequence ("▁" for spaces, dummy prefix included) and gives
// each token its byte offsets in the sequence.
func (m *model) Tokenize(sequence string) ([]sugar.Token, error) {
	var w work
	var toks []sugar.Token
	var ids []int
	for off := 0; off < len(sequence); {
		n := m.nextWord(sequence[off:])
		word := sequence[off : off+n]
		ids = m.encodeWord(&w, word, ids[:0])
		// offsets: walk the merged symbols again
		k := 0
		for i := int32(0); i >= 0 && len(w.syms) > 0; i = w.syms[i].next {
			s := w.syms[i]
			cnt := 1
			if !(s.id >= 0 && int(s.id) < len(m.pieces)) && m.byteFallback {
				cnt = int(s.end - s.start)
			}
			for c := 0; c < cnt && k < len(ids); c++ {
				toks = append(toks, sugar.NewToken(ids[k], m.pieces[ids[k]], []int{off + int(s.start), off + int(s.end)}))
				k++
			}
		}
		off += n
	}
	return toks, nil
}

// TokenToId implements sugarme/tokenizer's Model.
func (m *model) TokenToId(token string) (int, bool) {
	id, ok := m.lookup[token]
	return int(id), ok
}

// IdToToken implements sugarme/tokenizer's Model.
func (m *model) IdToToken(id int) (string, bool) {
	if id < 0 || id >= len(m.pieces) {
		return "", false
	}
	return m.pieces[id], true
}

// GetVocab implements sugarme/tokenizer's Model; it returns a new map.
func (m *model) GetVocab() map[string]int {
	v := make(map[string]int, len(m.lookup))
	for p, id := range m.lookup {
		v[p] = int(id)
	}
	return v
}

// GetVocabSize implements sugarme/tokenizer's Model.
func (m *model) GetVocabSize() int { return len(m.pieces) }

// Save implements sugarme/tokenizer's Model; saving is not supported.
func (m *model) Save(path string, prefixOpt ...string) error {
	return errors.New("tokenizer: saving the SentencePiece-BPE model is not supported")
}
