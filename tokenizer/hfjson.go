package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// hfFile is the part of an HF tokenizer.json the tokenizer needs.
type hfFile struct {
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Model        struct {
		Type                    string          `json:"type"`
		Vocab                   map[string]int  `json:"vocab"`
		Merges                  json.RawMessage `json:"merges"`
		UnkToken                *string         `json:"unk_token"`
		ByteFallback            bool            `json:"byte_fallback"`
		FuseUnk                 bool            `json:"fuse_unk"`
		ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
		Dropout                 *float64        `json:"dropout"`
	} `json:"model"`
}

// hfStep is one normalizer or pre-tokenizer of tokenizer.json.
type hfStep struct {
	Type          string          `json:"type"`
	Normalizers   []hfStep        `json:"normalizers"`
	PreTokenizers []hfStep        `json:"pretokenizers"`
	Prepend       string          `json:"prepend"`
	Pattern       json.RawMessage `json:"pattern"`
	Content       string          `json:"content"`
	Replacement   string          `json:"replacement"`
	AddPrefixSp   *bool           `json:"add_prefix_space"`
	PrependScheme string          `json:"prepend_scheme"`
	Split         *bool           `json:"split"`
}

// textSetup is what the normalizer and pre-tokenizer of tokenizer.json
// amount to for a SentencePiece-BPE model.
type textSetup struct {
	dummyPrefix, prefixFirst, escape bool
}

func (s *textSetup) apply(st hfStep, where string) error {
	switch st.Type {
	case "Sequence":
		list := st.Normalizers
		if list == nil {
			list = st.PreTokenizers
		}
		for _, sub := range list {
			if err := s.apply(sub, where); err != nil {
				return err
			}
		}
	case "Prepend":
		if st.Prepend != wsPiece {
			return fmt.Errorf("%s: Prepend %q is not supported (only %q)", where, st.Prepend, wsPiece)
		}
		s.dummyPrefix = true
	case "Replace":
		var pat struct {
			String *string `json:"String"`
		}
		if err := json.Unmarshal(st.Pattern, &pat); err != nil || pat.String == nil || *pat.String != " " || st.Content != wsPiece {
			return fmt.Errorf("%s: Replace %s -> %q is not supported (only \" \" -> %q)", where, st.Pattern, st.Content, wsPiece)
		}
		s.escape = true
	case "Metaspace":
		if st.Replacement != wsPiece {
			return fmt.Errorf("%s: Metaspace replacement %q is not supported", where, st.Replacement)
		}
		if st.Split != nil && *st.Split {
			return fmt.Errorf("%s: Metaspace with split is not supported", where)
		}
		s.escape = true
		switch {
		case st.PrependScheme == "first":
			s.dummyPrefix, s.prefixFirst = true, true
		case st.PrependScheme == "always":
			s.dummyPrefix = true
		case st.PrependScheme == "" && st.AddPrefixSp != nil && *st.AddPrefixSp:
			s.dummyPrefix = true
		}
	default:
		return fmt.Errorf("%s: %q is not supported", where, st.Type)
	}
	return nil
}

// fromHFJSON builds a Tokenizer from the bytes of a tokenizer.json.
func fromHFJSON(data []byte) (*Tokenizer, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	mod := f.Model
	if mod.Type != "BPE" {
		return nil, fmt.Errorf("model type %q is not supported: only BPE", mod.Type)
	}
	if len(mod.Vocab) == 0 {
		return nil, errors.New("model has no vocab")
	}
	if (mod.ContinuingSubwordPrefix != nil && *mod.ContinuingSubwordPrefix != "") || (mod.EndOfWordSuffix != nil && *mod.EndOfWordSuffix != "") {
		return nil, errors.New("continuing_subword_prefix / end_of_word_suffix are not supported")
	}
	if mod.Dropout != nil && *mod.Dropout > 0 {
		return nil, errors.New("BPE dropout is not supported")
	}
	var setup textSetup
	for _, part := range []struct {
		raw  json.RawMessage
		name string
	}{{f.Normalizer, "normalizer"}, {f.PreTokenizer, "pre_tokenizer"}} {
		if len(part.raw) == 0 || string(part.raw) == "null" {
			continue
		}
		var st hfStep
		if err := json.Unmarshal(part.raw, &st); err != nil {
			return nil, fmt.Errorf("%s: %w", part.name, err)
		}
		if err := setup.apply(st, part.name); err != nil {
			return nil, err
		}
	}
	joins, err := parseMerges(mod.Merges)
	if err != nil {
		return nil, err
	}
	size := 0
	for _, id := range mod.Vocab {
		size = max(size, id+1)
	}
	for _, a := range f.AddedTokens {
		size = max(size, a.ID+1)
	}
	pieces := make([]string, size)
	kinds := make([]pieceKind, size)
	filled := make([]bool, size)
	for p, id := range mod.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("vocab %q: negative id %d", p, id)
		}
		if filled[id] {
			return nil, fmt.Errorf("vocab %q: id %d already used by %q", p, id, pieces[id])
		}
		pieces[id], kinds[id], filled[id] = p, kindNormal, true
		if _, ok := parseBytePiece(p); ok && mod.ByteFallback {
			kinds[id] = kindByte
		}
	}
	var specials []special
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("added token %q: bad id %d", a.Content, a.ID)
		}
		if filled[a.ID] && pieces[a.ID] != a.Content {
			return nil, fmt.Errorf("added token %q: id %d is %q in the vocab", a.Content, a.ID, pieces[a.ID])
		}
		pieces[a.ID], filled[a.ID] = a.Content, true
		if a.Special {
			kinds[a.ID] = kindControl
		} else if kinds[a.ID] == 0 {
			kinds[a.ID] = kindUserDefined
		}
		specials = append(specials, special{text: a.Content, id: a.ID})
	}
	for id, ok := range filled {
		if !ok {
			return nil, fmt.Errorf("vocab: no token has id %d", id)
		}
	}
	unk := -1
	if mod.UnkToken != nil {
		id, ok := mod.Vocab[*mod.UnkToken]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocab", *mod.UnkToken)
		}
		unk = id
		kinds[id] = kindUnknown
	}
	if unk < 0 {
		return nil, errors.New("model has no unk_token")
	}
	m, err := newModel(pieces, kinds, nil, joins, mod.ByteFallback, mod.FuseUnk, setup.escape, unk)
	if err != nil {
		return nil, err
	}
	find := func(s string) int {
		if id, ok := m.lookup[s]; ok && kinds[id] == kindControl {
			return int(id)
		}
		return -1
	}
	return &Tokenizer{
		m:              m,
		bos:            find("<s>"),
		eos:            find("</s>"),
		unk:            unk,
		addDummyPrefix: setup.dummyPrefix,
		prefixFirst:    setup.prefixFirst,
		specials:       specials,
	}, nil
}

// parseMerges reads merges written as "a b" strings or as [a, b] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return [][2]string{}, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok || a == "" || b == "" || strings.Contains(b, " ") {
				return nil, fmt.Errorf("merge %d %q: not two space-separated parts", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("merges: neither strings nor pairs: %w", err)
	}
	return pairs, nil
}
