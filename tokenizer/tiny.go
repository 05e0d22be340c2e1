package tokenizer

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// PieceType is a SentencePiece piece type.
type PieceType int

// The SentencePiece piece types.
const (
	Normal      PieceType = 1
	Unknown     PieceType = 2
	Control     PieceType = 3
	UserDefined PieceType = 4
	Unused      PieceType = 5
	Byte        PieceType = 6
)

// Piece is one vocabulary entry of a SentencePiece model.
type Piece struct {
	Text  string
	Score float32
	Type  PieceType
}

// MarshalModel encodes pieces (in id order) as a SentencePiece BPE
// tokenizer.model with LLaMA's settings: identity normalizer, dummy prefix,
// spaces escaped, no extra-whitespace removal, byte fallback, unk/bos/eos
// ids 0/1/2. Tests use it to make tokenizers without the shared fixtures.
func MarshalModel(pieces []Piece) []byte {
	var out []byte
	for _, p := range pieces {
		var b []byte
		b = protowire.AppendTag(b, fPiecePiece, protowire.BytesType)
		b = protowire.AppendString(b, p.Text)
		b = protowire.AppendTag(b, fPieceScore, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(p.Score))
		if p.Type != Normal {
			b = protowire.AppendTag(b, fPieceType, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(p.Type))
		}
		out = protowire.AppendTag(out, fModelPieces, protowire.BytesType)
		out = protowire.AppendBytes(out, b)
	}
	var ts []byte
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	ts = varint(ts, fTrainerModelType, 2)
	ts = varint(ts, fTrainerByteFallback, 1)
	ts = varint(ts, fTrainerUnkID, 0)
	ts = varint(ts, fTrainerBosID, 1)
	ts = varint(ts, fTrainerEosID, 2)
	ts = varint(ts, fTrainerPadID, uint64(math.MaxUint64)) // -1
	out = protowire.AppendTag(out, fModelTrainerSpec, protowire.BytesType)
	out = protowire.AppendBytes(out, ts)
	var ns []byte
	ns = protowire.AppendTag(ns, fNormName, protowire.BytesType)
	ns = protowire.AppendString(ns, "identity")
	ns = varint(ns, fNormAddDummyPrefix, 1)
	ns = varint(ns, fNormRemoveExtraWS, 0)
	out = protowire.AppendTag(out, fModelNormalizerSpec, protowire.BytesType)
	out = protowire.AppendBytes(out, ns)
	return out
}

// TinyPieces returns a small LLaMA-shaped vocabulary: <unk> <s> </s>
// (ids 0-2), the byte pieces <0x00>..<0xFF> (ids 3-258), "▁" (id 259), then
// for each word (spaces written as "▁", e.g. "▁Yes") its characters and its
// prefixes of two or more characters, each new piece scored below the
// previous one. Words that share characters can interact in BPE; Tiny
// checks that each word starting with "▁" encodes alone to its own piece.
func TinyPieces(words ...string) []Piece {
	pieces := []Piece{{"<unk>", 0, Unknown}, {"<s>", 0, Control}, {"</s>", 0, Control}}
	for b := 0; b < 256; b++ {
		pieces = append(pieces, Piece{bytePiece(byte(b)), 0, Byte})
	}
	pieces = append(pieces, Piece{wsPiece, -1e9, Normal})
	seen := map[string]bool{wsPiece: true}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			pieces = append(pieces, Piece{s, float32(-len(pieces)), Normal})
		}
	}
	for _, w := range words {
		for _, r := range w {
			add(string(r))
		}
		for i := range w {
			if i > 0 && utf8.RuneCountInString(w[:i]) >= 2 {
				add(w[:i])
			}
		}
		if utf8.RuneCountInString(w) >= 2 {
			add(w)
		}
	}
	return pieces
}

// Tiny builds a tokenizer on TinyPieces(words...) through MarshalModel and
// the tokenizer.model reader, and checks that each word (with "▁" read as a
// space and the dummy prefix accounted for) encodes to its own piece.
func Tiny(words ...string) (*Tokenizer, error) {
	p, err := parseSPM(MarshalModel(TinyPieces(words...)))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: tiny model: %w", err)
	}
	t, err := fromSPM(p)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: tiny model: %w", err)
	}
	t.path = "(tiny)"
	t.init()
	for _, w := range words {
		id, _ := t.PieceID(w)
		if !strings.HasPrefix(w, wsPiece) {
			continue // without a leading "▁" the dummy prefix changes the word
		}
		text := strings.ReplaceAll(strings.TrimPrefix(w, wsPiece), wsPiece, " ")
		if got := t.Encode(text, false); len(got) != 1 || got[0] != id {
			return nil, fmt.Errorf("tokenizer: tiny model: %q encodes to %v, not its piece %d", w, got, id)
		}
	}
	return t, nil
}
