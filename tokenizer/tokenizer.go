// Package tokenizer is the LLaMA / Vicuna SentencePiece-BPE tokenizer: it
// turns text into the token ids HF's LlamaTokenizer gives (slow and fast
// agree), and ids back into text.
//
// It loads either a SentencePiece tokenizer.model (parsed here from the
// protobuf) or an HF tokenizer.json (vocabulary, merges, added tokens); a
// folder holding both is read from tokenizer.model, the original artifact
// with the piece scores and types; tokenizer.json is a conversion of it (the
// project's own copy needed a repair: four keys had U+0020 for U+00A0). On
// the shared test cases both give identical ids.
//
// Encoding (HF LlamaTokenizer semantics):
//   - The text is first cut at special tokens (<unk>, <s>, </s>; for
//     tokenizer.json every added token), leftmost and longest first; each
//     occurrence becomes its id. So a literal "<s>" in the text gives id 1,
//     as HF does for Llama-2 (meta-llama/Llama-2-7b-hf; its added tokens are
//     not normalized). The normalized flag of tokenizer.json's added tokens is
//     not used: both file kinds cut special tokens from the raw text.
//   - Every non-empty piece of text between them is normalized on its own:
//     spaces become "▁" (U+2581) and a "▁" is prepended (the dummy prefix).
//   - BPE as SentencePiece does it: start from characters; repeatedly join
//     the adjacent pair with the best score (for tokenizer.json: the lowest
//     merge rank), the leftmost one on a tie; characters outside the
//     vocabulary become their UTF-8 bytes as <0xXX> pieces (byte fallback).
//   - BOS (1) is prepended when asked. EOS (2) is never appended by Encode.
//
// Decoding follows HF's Llama decoder chain (Replace "▁" by " ",
// ByteFallback, Fuse, Strip one leading space), skipping special tokens.
//
// The sugarme/tokenizer library models the pipeline (normalizer, model,
// added tokens, decoder); this package's BPE model implements its Model
// interface and Pipeline returns that pipeline. Encode does not run through
// it: sugarme's NormalizedString keeps per-byte alignments and compiles a
// regexp per pattern search (measured: about 55,000 tokens/s on a Vicuna
// prompt, against over 10 million for Encode without its word cache), its
// Prepend normalizer returns nil on empty text, and its added-token matcher
// re-sorts matches by pattern index, so in "a </s> b <s>" the "</s>" is not
// recognised and is encoded as plain text. Encode therefore cuts special
// tokens and normalizes itself, then calls the same model. Decode uses
// sugarme's decoders.
package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	sugar "github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/decoder"
	"github.com/sugarme/tokenizer/normalizer"
)

// Tokenizer encodes text into LLaMA token ids and decodes them back.
// It is safe for concurrent use.
type Tokenizer struct {
	m              *model
	bos, eos, unk  int
	addDummyPrefix bool
	prefixFirst    bool // dummy prefix only on the first text piece (HF Metaspace prepend_scheme "first")
	removeExtraWS  bool
	specials       []special
	noCache        bool // benchmarks: merge every word afresh
	path           string

	dec     *sugar.Tokenizer // decoding pipeline
	pool    sync.Pool        // *work
	cacheMu sync.RWMutex
	cache   map[string][]int // word -> ids
}

// special is a token cut out of the text before normalization.
type special struct {
	text string
	id   int
}

// maxCache bounds the word cache; it is emptied when full.
const maxCache = 1 << 16

// maxCachedWord is the longest word (bytes) kept in the cache.
const maxCachedWord = 64

// Load reads a tokenizer from path: a tokenizer.model, a tokenizer.json, or
// a folder holding either (tokenizer.model is preferred when both exist).
func Load(path string) (*Tokenizer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if st.IsDir() {
		found := ""
		for _, name := range []string{"tokenizer.model", "tokenizer.json"} {
			if _, err := os.Stat(filepath.Join(path, name)); err == nil {
				found = filepath.Join(path, name)
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("tokenizer: %s: no tokenizer.model or tokenizer.json in the folder", path)
		}
		path = found
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var t *Tokenizer
	if strings.HasSuffix(path, ".json") {
		t, err = fromHFJSON(data)
	} else {
		var p *spmProto
		p, err = parseSPM(data)
		if err == nil {
			t, err = fromSPM(p)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	t.path = path
	t.init()
	return t, nil
}

// init finishes construction: pools, cache and the sugarme decoding pipeline.
func (t *Tokenizer) init() {
	t.pool.New = func() any { return new(work) }
	t.cache = make(map[string][]int)
	t.dec = t.buildPipeline()
}

// buildPipeline assembles sugarme's pipeline around the model: the Llama
// normalizer (Prepend "▁", Replace " " -> "▁"), the special tokens and the
// Llama decoder chain.
func (t *Tokenizer) buildPipeline() *sugar.Tokenizer {
	p := sugar.NewTokenizer(t.m)
	var norms []normalizer.Normalizer
	if t.addDummyPrefix {
		norms = append(norms, normalizer.NewPrepend(wsPiece))
	}
	if t.m.escapeSpaces {
		norms = append(norms, normalizer.NewReplace(normalizer.String, " ", wsPiece))
	}
	if len(norms) > 0 {
		p.WithNormalizer(normalizer.NewSequence(norms))
	}
	var toks []sugar.AddedToken
	for _, s := range t.specials {
		toks = append(toks, sugar.NewAddedToken(s.text, true))
	}
	p.AddSpecialTokens(toks)
	decs := []sugar.Decoder{
		normalizer.NewReplace(normalizer.String, wsPiece, " "),
		decoder.NewByteFallback(),
		decoder.NewFuse(),
	}
	if t.addDummyPrefix {
		decs = append(decs, decoder.NewStrip(" ", 1, 0))
	}
	p.WithDecoder(decoder.NewSequence(decs))
	return p
}

// Pipeline returns a new sugarme/tokenizer pipeline built around this
// tokenizer's model (normalizer, special tokens, decoder). Its Encode gives
// the same ids as Encode for text without special tokens, with offsets, but
// it is slow and fails on empty text; see the package comment.
func (t *Tokenizer) Pipeline() *sugar.Tokenizer { return t.buildPipeline() }

// Path returns the file the tokenizer was read from.
func (t *Tokenizer) Path() string { return t.path }

// VocabSize returns the number of pieces (32000 for LLaMA).
func (t *Tokenizer) VocabSize() int { return len(t.m.pieces) }

// BOS returns the begin-of-sequence id (1 for LLaMA), or -1 if none.
func (t *Tokenizer) BOS() int { return t.bos }

// EOS returns the end-of-sequence id (2 for LLaMA), or -1 if none.
func (t *Tokenizer) EOS() int { return t.eos }

// UNK returns the unknown-token id (0 for LLaMA).
func (t *Tokenizer) UNK() int { return t.unk }

// PieceID returns the id of a piece, e.g. "▁Yes" -> 3869.
func (t *Tokenizer) PieceID(piece string) (int, bool) {
	id, ok := t.m.lookup[piece]
	return int(id), ok
}

// Piece returns the piece of an id, e.g. 3869 -> "▁Yes".
func (t *Tokenizer) Piece(id int) (string, bool) { return t.m.IdToToken(id) }

// Encode returns the ids of text, with BOS first when addBOS is set.
// Special-token text ("<s>", "</s>", "<unk>") becomes its id.
func (t *Tokenizer) Encode(text string, addBOS bool) []int {
	out := make([]int, 0, len(text)/3+2)
	return t.AppendEncode(out, text, addBOS)
}

// AppendEncode appends the ids of text to out, like Encode.
func (t *Tokenizer) AppendEncode(out []int, text string, addBOS bool) []int {
	if addBOS && t.bos >= 0 {
		out = append(out, t.bos)
	}
	w := t.pool.Get().(*work)
	defer t.pool.Put(w)
	first := true
	for len(text) > 0 {
		at, sp := t.nextSpecial(text)
		if at > 0 {
			out = t.encodeChunk(w, text[:at], first, out)
			first = false
		}
		if sp == nil {
			break
		}
		out = append(out, sp.id)
		first = false
		text = text[at+len(sp.text):]
	}
	return out
}

// nextSpecial finds the leftmost (then longest) special token in s; it
// returns len(s) and nil when there is none.
func (t *Tokenizer) nextSpecial(s string) (int, *special) {
	best, bestAt := -1, len(s)
	for i := range t.specials {
		sp := &t.specials[i]
		at := strings.Index(s[:min(len(s), bestAt+len(sp.text))], sp.text)
		if at < 0 {
			continue
		}
		if at < bestAt || (at == bestAt && len(sp.text) > len(t.specials[best].text)) {
			best, bestAt = i, at
		}
	}
	if best < 0 {
		return len(s), nil
	}
	return bestAt, &t.specials[best]
}

// encodeChunk normalizes and encodes a piece of text free of special tokens.
func (t *Tokenizer) encodeChunk(w *work, text string, first bool, out []int) []int {
	if t.removeExtraWS {
		text = collapseSpaces(text)
		if text == "" {
			return out
		}
	}
	prefix := t.addDummyPrefix && (first || !t.prefixFirst)
	if prefix {
		// The first word carries the dummy prefix: encode " "+word.
		n := t.m.nextWord(text)
		if !t.m.escapeSpaces {
			out = t.encodeWord(w, wsPiece+text[:n], out)
		} else {
			out = t.encodeWord(w, " "+text[:n], out)
		}
		text = text[n:]
	}
	for len(text) > 0 {
		n := t.m.nextWord(text)
		out = t.encodeWord(w, text[:n], out)
		text = text[n:]
	}
	return out
}

// encodeWord encodes one word through the cache.
func (t *Tokenizer) encodeWord(w *work, word string, out []int) []int {
	if len(word) > maxCachedWord || t.noCache {
		return t.m.encodeWord(w, word, out)
	}
	t.cacheMu.RLock()
	ids, ok := t.cache[word]
	t.cacheMu.RUnlock()
	if ok {
		return append(out, ids...)
	}
	n := len(out)
	out = t.m.encodeWord(w, word, out)
	ids = append([]int(nil), out[n:]...)
	key := strings.Clone(word)
	t.cacheMu.Lock()
	if len(t.cache) >= maxCache {
		clear(t.cache)
	}
	t.cache[key] = ids
	t.cacheMu.Unlock()
	return out
}

// collapseSpaces implements SentencePiece's remove_extra_whitespaces: no
// leading or trailing spaces, runs of spaces become one.
func collapseSpaces(s string) string {
	s = strings.Trim(s, " ")
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	prev := false
	for i := 0; i < len(s); i++ {
		sp := s[i] == ' '
		if !(sp && prev) {
			b.WriteByte(s[i])
		}
		prev = sp
	}
	return b.String()
}

// Decode turns ids back into text: special tokens (BOS, EOS, <unk>) and ids
// outside the vocabulary are skipped, "▁" becomes a space, runs of byte
// pieces are joined into UTF-8 (invalid bytes become U+FFFD each) and the
// dummy-prefix space is removed.
func (t *Tokenizer) Decode(ids []int) string {
	kept := make([]int, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.m.pieces) {
			continue
		}
		if k := t.m.kinds[id]; k == kindControl || k == kindUnknown {
			continue
		}
		kept = append(kept, id)
	}
	if len(kept) == 0 {
		// sugarme's Strip decoder indexes the first character of the text
		return ""
	}
	return t.dec.Decode(kept, true)
}
