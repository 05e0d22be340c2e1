package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/rella-project/rella/internal/testenv"
)

// testCase is one entry of shared/fixtures/tokenizer/cases/*.json: ids from
// HF's LlamaTokenizer.
type testCase struct {
	Text   string `json:"text"`
	AddBOS bool   `json:"add_bos"`
	IDs    []int  `json:"ids"`
}

var caseFiles = []string{"groundtruth.json", "extra_cases.json", "tie_cases.json", "crosscheck_cases.json"}

func loadCases(t testing.TB, name string) []testCase {
	t.Helper()
	dir := testenv.Shared(t, "fixtures/tokenizer/cases")
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var cs []testCase
	if err := json.Unmarshal(data, &cs); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cs
}

var (
	loadOnce sync.Map // file -> *Tokenizer
)

func llama(t testing.TB, file string) *Tokenizer {
	t.Helper()
	p := filepath.Join(testenv.Shared(t, "fixtures/tokenizer/llama"), file)
	if tk, ok := loadOnce.Load(p); ok {
		return tk.(*Tokenizer)
	}
	tk, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	loadOnce.Store(p, tk)
	return tk
}

// TestCases checks every case file against both tokenizer files. The
// groundtruth case "<s>" (add_bos) expects [1, 1]: HF cuts the literal
// special token out of the text and this package does the same.
func TestCases(t *testing.T) {
	for _, file := range []string{"tokenizer.model", "tokenizer.json"} {
		tk := llama(t, file)
		for _, name := range caseFiles {
			if testing.Short() && name == "crosscheck_cases.json" && file == "tokenizer.json" {
				continue
			}
			t.Run(file+"/"+name, func(t *testing.T) {
				cs := loadCases(t, name)
				bad := 0
				for i, c := range cs {
					got := tk.Encode(c.Text, c.AddBOS)
					if !slices.Equal(got, c.IDs) {
						bad++
						if bad <= 5 {
							t.Errorf("case %d %q (bos %v):\n got  %v\n want %v", i, c.Text, c.AddBOS, got, c.IDs)
						}
					}
				}
				if bad > 0 {
					t.Errorf("%d of %d cases differ", bad, len(cs))
				}
			})
		}
	}
}

// TestLiteralSpecialToken pins the choice for "<s>" in the text: it becomes
// BOS (HF's behaviour for Llama-2), also between words.
func TestLiteralSpecialToken(t *testing.T) {
	tk := llama(t, "tokenizer.model")
	if got, want := tk.Encode("<s>", true), []int{1, 1}; !slices.Equal(got, want) {
		t.Errorf("<s>: got %v want %v", got, want)
	}
	// Each side is encoded on its own, with its own dummy prefix:
	// "Hello " -> ▁Hello ▁ ; " world" -> ▁ ▁world (as plain encodes of the
	// parts show).
	hello := tk.Encode("Hello ", false)
	world := tk.Encode(" world", false)
	want := append(append(append([]int{}, hello...), 2, 1), world...)
	if got := tk.Encode("Hello </s><s> world", false); !slices.Equal(got, want) {
		t.Errorf("got %v want %v", got, want)
	}
}

// TestAnswerTokens checks the ids the scorer reads.
func TestAnswerTokens(t *testing.T) {
	tk := llama(t, "tokenizer.model")
	for piece, want := range map[string]int{"▁Yes": 3869, "▁No": 1939, "Yes": 8241, "No": 3782, "▁": 29871} {
		if id, ok := tk.PieceID(piece); !ok || id != want {
			t.Errorf("PieceID(%q) = %d, %v; want %d", piece, id, ok, want)
		}
		if p, ok := tk.Piece(want); !ok || p != piece {
			t.Errorf("Piece(%d) = %q; want %q", want, p, piece)
		}
	}
	if tk.VocabSize() != 32000 || tk.BOS() != 1 || tk.EOS() != 2 || tk.UNK() != 0 {
		t.Errorf("vocab %d bos %d eos %d unk %d", tk.VocabSize(), tk.BOS(), tk.EOS(), tk.UNK())
	}
	// " Yes." after "ASSISTANT:" merges the space into ▁Yes
	ids := tk.Encode("ASSISTANT: Yes.", false)
	if !slices.Contains(ids, 3869) {
		t.Errorf("ASSISTANT: Yes. -> %v lacks 3869", ids)
	}
}

// TestSameOnBothFiles compares the two file formats beyond the cases'
// expected ids (they already pass TestCases): vocab size and special ids.
func TestSameOnBothFiles(t *testing.T) {
	a, b := llama(t, "tokenizer.model"), llama(t, "tokenizer.json")
	if a.VocabSize() != b.VocabSize() || a.BOS() != b.BOS() || a.EOS() != b.EOS() || a.UNK() != b.UNK() {
		t.Errorf("model: %d %d %d %d, json: %d %d %d %d", a.VocabSize(), a.BOS(), a.EOS(), a.UNK(), b.VocabSize(), b.BOS(), b.EOS(), b.UNK())
	}
	for id := 0; id < a.VocabSize(); id++ {
		pa, _ := a.Piece(id)
		pb, _ := b.Piece(id)
		if pa != pb {
			t.Errorf("id %d: %q vs %q", id, pa, pb)
		}
	}
}

// TestFolder checks that a folder loads from tokenizer.model.
func TestFolder(t *testing.T) {
	dir := testenv.Shared(t, "fixtures/tokenizer/llama")
	tk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(tk.Path()) != "tokenizer.model" {
		t.Errorf("loaded %s", tk.Path())
	}
	// a folder with only tokenizer.json
	tmp := t.TempDir()
	data, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "tokenizer.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tk, err = Load(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(tk.Path()) != "tokenizer.json" {
		t.Errorf("loaded %s", tk.Path())
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no tokenizer.model or tokenizer.json") {
		t.Errorf("empty folder: %v", err)
	}
}

// TestMergePaths runs the priority-queue merge on every word of the case
// files and compares with the linear-scan merge used for short words.
func TestMergePaths(t *testing.T) {
	for _, file := range []string{"tokenizer.model", "tokenizer.json"} {
		tk := llama(t, file)
		var w1, w2 work
		n := 0
		for _, name := range caseFiles {
			for _, c := range loadCases(t, name) {
				for _, word := range strings.Fields(c.Text) {
					word = " " + word
					w1.syms, w2.syms = w1.syms[:0], w2.syms[:0]
					a := tk.m.encodeWordWith(&w1, word, nil, false)
					b := tk.m.encodeWordWith(&w2, word, nil, true)
					if !slices.Equal(a, b) {
						t.Fatalf("%s: %q: scan %v heap %v", file, word, a, b)
					}
					n++
				}
			}
		}
		t.Logf("%s: %d words agree", file, n)
	}
}

// TestRoundTrip decodes the ids of every case back to its text (cases
// without special-token text; invalid UTF-8 cannot come from JSON).
func TestRoundTrip(t *testing.T) {
	tk := llama(t, "tokenizer.model")
	for _, name := range caseFiles {
		cs := loadCases(t, name)
		bad := 0
		for i, c := range cs {
			if strings.Contains(c.Text, "<s>") || strings.Contains(c.Text, "</s>") || strings.Contains(c.Text, "<unk>") {
				continue
			}
			if got := tk.Decode(c.IDs); got != c.Text {
				bad++
				if bad < 5 {
					t.Errorf("%s case %d: decode %q, want %q", name, i, got, c.Text)
				}
			}
		}
	}
	// BOS/EOS are skipped; invalid byte runs become U+FFFD per byte.
	if got := tk.Decode([]int{1, 15043, 2}); got != "Hello" {
		t.Errorf("got %q", got)
	}
	if got := tk.Decode([]int{1, 2}); got != "" {
		t.Errorf("got %q", got)
	}
	// 243 162 = <0xF0><0x9F>: a truncated 4-byte sequence
	if got := tk.Decode([]int{15043, 243, 162}); got != "Hello\uFFFD\uFFFD" {
		t.Errorf("got %q", got)
	}
}

// TestEncodeUnusual covers text the case files lack: invalid UTF-8 (each
// byte becomes its byte piece), a literal "▁", and a long word that takes
// the priority-queue path.
func TestEncodeUnusual(t *testing.T) {
	tk := llama(t, "tokenizer.model")
	got := tk.Encode("a\xffb", false)
	// "a" alone is [▁a]; inside the word "b" is the bare "b" piece
	bID, _ := tk.PieceID("b")
	want := slices.Concat(tk.Encode("a", false), []int{3 + 0xff, bID})
	if !slices.Equal(got, want) {
		t.Errorf("invalid utf-8: got %v want %v", got, want)
	}
	// SentencePiece cannot tell a literal "▁" from an escaped space.
	if a, b := tk.Encode("a▁b", false), tk.Encode("a b", false); !slices.Equal(a, b) {
		t.Errorf("literal ▁: %v vs %v", a, b)
	}
	long := strings.Repeat("abc", 100)
	if !utf8.ValidString(long) || tk.Decode(tk.Encode(long, true)) != long {
		t.Errorf("long word does not round-trip")
	}
}

// TestConcurrent encodes a subset from many goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	tk, err := Load(filepath.Join(testenv.Shared(t, "fixtures/tokenizer/llama"), "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	cs := loadCases(t, "extra_cases.json")
	cs = append(cs, loadCases(t, "groundtruth.json")...)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < 3; r++ {
				for i := range cs {
					c := cs[(i+g*7)%len(cs)]
					if got := tk.Encode(c.Text, c.AddBOS); !slices.Equal(got, c.IDs) {
						select {
						case errs <- c.Text:
						default:
						}
						return
					}
					_ = tk.Decode(c.IDs)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("concurrent encode of %q differs", s)
	}
}

// TestCorruptFiles checks that broken files give errors naming the file.
func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(p, want string) {
		t.Helper()
		_, err := Load(p)
		if err == nil {
			t.Fatalf("%s: no error", p)
		}
		if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q lacks the path or %q", p, err, want)
		}
	}
	check(write("garbage.model", []byte{0xff, 0xff, 0xff}), "bad field tag")
	check(write("empty.model", nil), "no pieces")
	check(write("bad.json", []byte(`{"model": {"type": "BPE", "vocab": {`)), "unexpected end")
	check(write("unigram.json", []byte(`{"model": {"type": "Unigram"}}`)), "only BPE")
	check(filepath.Join(dir, "missing.model"), "no such file")

	src := filepath.Join(testenv.Shared(t, "fixtures/tokenizer/llama"), "tokenizer.model")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	check(write("truncated.model", data[:len(data)/2]), "field")

	js, err := os.ReadFile(filepath.Join(filepath.Dir(src), "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	check(write("badmerge.json", []byte(strings.Replace(string(js), `"▁ t"`, `"▁ zzqq"`, 1))), "merge")
}

// TestWholeTextMerge encodes without cutting text into words: SentencePiece
// merges over the whole normalized text, so the cut must not change ids.
func TestWholeTextMerge(t *testing.T) {
	tk := llama(t, "tokenizer.model")
	m := *tk.m
	m.splitWords = false
	whole := &Tokenizer{m: &m, bos: tk.bos, eos: tk.eos, unk: tk.unk, addDummyPrefix: tk.addDummyPrefix, specials: tk.specials}
	whole.init()
	for _, name := range []string{"groundtruth.json", "extra_cases.json", "tie_cases.json"} {
		for i, c := range loadCases(t, name) {
			if got := whole.Encode(c.Text, c.AddBOS); !slices.Equal(got, c.IDs) {
				t.Errorf("%s case %d %q: got %v want %v", name, i, c.Text, got, c.IDs)
			}
		}
	}
}

// TestPipeline runs sugarme's pipeline with this package's model and
// checks it gives the expected ids (text without special tokens).
func TestPipeline(t *testing.T) {
	tk := llama(t, "tokenizer.model")
	p := tk.Pipeline()
	n := 0
	for _, name := range []string{"groundtruth.json", "extra_cases.json", "tie_cases.json"} {
		for i, c := range loadCases(t, name) {
			if c.Text == "" || strings.Contains(c.Text, "<s>") {
				continue
			}
			enc, err := p.EncodeSingle(c.Text, false)
			if err != nil {
				t.Fatalf("%s case %d: %v", name, i, err)
			}
			want := c.IDs
			if c.AddBOS {
				want = want[1:]
			}
			if !slices.Equal(enc.Ids, want) {
				t.Errorf("%s case %d %q: pipeline %v want %v", name, i, c.Text, enc.Ids, want)
			}
			n++
		}
	}
	t.Logf("%d cases through the sugarme pipeline", n)
}
