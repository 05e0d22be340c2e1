package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// handModel is a vocabulary small enough to run SentencePiece BPE by hand:
// ids 0-2 <unk> <s> </s>, 3-258 bytes, then these pieces.
func handModel(t *testing.T) *Tokenizer {
	t.Helper()
	pieces := TinyPieces()[:260] // specials, bytes, "▁" (-1e9)
	pieces = append(pieces,
		Piece{"a", -10, Normal},    // 260
		Piece{"b", -11, Normal},    // 261
		Piece{"aa", -1, Normal},    // 262
		Piece{"▁b", -2, Normal},    // 263
		Piece{"▁▁", -1e9, Normal},  // 264
		Piece{"▁▁▁", -1e9, Normal}, // 265
		Piece{"<x>", 0, Control},   // 266
	)
	path := filepath.Join(t.TempDir(), "tokenizer.model")
	if err := os.WriteFile(path, MarshalModel(pieces), 0o644); err != nil {
		t.Fatal(err)
	}
	tk, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestHandModel checks ids worked out by hand with SentencePiece's rules.
func TestHandModel(t *testing.T) {
	tk := handModel(t)
	byteID := func(b byte) int { return 3 + int(b) }
	for _, c := range []struct {
		text string
		bos  bool
		want []int
	}{
		{"", false, nil},
		{"", true, []int{1}},
		// ▁ a a a: "aa" (-1) at 1 and 2 tie, leftmost first: ▁ aa a
		{"aaa", false, []int{259, 262, 260}},
		{"b", true, []int{1, 263}},
		// ▁ ▁ ▁ b: "▁b" (-2) first, then the "▁▁" (-1e9) ties leftmost
		{"  b", false, []int{264, 263}},
		// ▁▁▁▁: ▁▁ at 0 (leftmost), then ▁▁▁ at 0 beats ▁▁ at 2 by position
		{"   ", false, []int{265, 259}},
		// "c" and "é" are not pieces: byte fallback
		{"c", false, []int{259, byteID('c')}},
		{"é", false, []int{259, byteID(0xC3), byteID(0xA9)}},
		// control pieces in the text are cut out; each side has its own prefix
		{"<s>b", false, []int{1, 263}},
		{"b</s>b<x>", false, []int{263, 2, 263, 266}},
		{"a b", false, []int{259, 260, 263}},
	} {
		if got := tk.Encode(c.text, c.bos); !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("Encode(%q, %v) = %v, want %v", c.text, c.bos, got, c.want)
		}
	}
	for _, s := range []string{"aaa", "  b", "é c", " a b "} {
		if got := tk.Decode(tk.Encode(s, true)); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
	if tk.VocabSize() != 267 || tk.BOS() != 1 || tk.EOS() != 2 || tk.UNK() != 0 {
		t.Errorf("vocab %d bos %d eos %d unk %d", tk.VocabSize(), tk.BOS(), tk.EOS(), tk.UNK())
	}
}

// TestTiny checks the generated test vocabulary.
func TestTiny(t *testing.T) {
	tk, err := Tiny("▁Yes", "▁No", "▁the", "▁movie")
	if err != nil {
		t.Fatal(err)
	}
	yes, _ := tk.PieceID("▁Yes")
	no, _ := tk.PieceID("▁No")
	if got := tk.Encode("Yes", true); !slices.Equal(got, []int{1, yes}) {
		t.Errorf("Yes -> %v", got)
	}
	ids := tk.Encode("ASSISTANT: No.", false)
	if !slices.Contains(ids, no) {
		t.Errorf("ASSISTANT: No. -> %v lacks ▁No %d", ids, no)
	}
	text := "the movie Amélie (2001) 🎬\n"
	if got := tk.Decode(tk.Encode(text, true)); got != text {
		t.Errorf("round trip %q -> %q", text, got)
	}
}

// TestUnsupportedModels checks the refusals of the tokenizer.model reader.
func TestUnsupportedModels(t *testing.T) {
	base := TinyPieces()[:260]
	for _, c := range []struct {
		name   string
		pieces []Piece
		want   string
	}{
		{"dup", append(slices.Clone(base), Piece{"▁", 0, Normal}), "already defined"},
		{"user", append(slices.Clone(base), Piece{"xy", 0, UserDefined}), "USER_DEFINED"},
		{"nounk", base[1:], "no UNKNOWN piece"},
		{"nobyte", append(slices.Clone(base[:3]), base[4:]...), "<0x00> is missing"},
	} {
		_, err := fromSPMBytes(MarshalModel(c.pieces))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func fromSPMBytes(b []byte) (*Tokenizer, error) {
	p, err := parseSPM(b)
	if err != nil {
		return nil, err
	}
	return fromSPM(p)
}
