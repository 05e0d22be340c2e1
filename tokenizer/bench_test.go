package tokenizer

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

var benchTitles = []string{
	"True Romance (1993)", "Desperado (1995)", "Backdraft (1991)", "Ronin (1998)", "Heat (1995)",
	"Fargo (1996)", "Casino (1995)", "Toy Story (1995)", "Jumanji (1995)", "Grumpier Old Men (1995)",
	"Waiting to Exhale (1995)", "Father of the Bride Part II (1995)", "Sabrina (1995)", "Tom and Huck (1995)",
	"Sudden Death (1995)", "GoldenEye (1995)", "American President, The (1995)", "Dracula: Dead and Loving It (1995)",
	"Balto (1995)", "Nixon (1995)", "Cutthroat Island (1995)", "Sense and Sensibility (1995)", "Four Rooms (1995)",
	"Ace Ventura: When Nature Calls (1995)", "Money Train (1995)", "Get Shorty (1995)", "Copycat (1995)",
	"Assassins (1995)", "Powder (1995)", "Leaving Las Vegas (1995)", "Othello (1995)", "Now and Then (1995)",
	"Persuasion (1995)", "City of Lost Children, The (1995)", "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
	"Dangerous Minds (1995)", "Twelve Monkeys (1995)", "Wings of Courage (1995)", "Babe (1995)", "Carrington (1995)",
	"Dead Man Walking (1995)", "Across the Sea of Time (1995)", "It Takes Two (1995)", "Clueless (1995)",
	"Ulee's Gold (1997)", "Crouching Tiger, Hidden Dragon (Wu Hu Zang Long) (2000)", "Amélie (2001)",
}

// benchPrompt renders a ReLLa ML-1M prompt with n history items, wrapped in
// the Vicuna template (about 400 tokens for n = 15).
func benchPrompt(r *rand.Rand, n int) string {
	items := make([]string, n)
	for i := range items {
		stars := 1 + r.IntN(5)
		unit := "stars"
		if stars == 1 {
			unit = "star"
		}
		title := benchTitles[r.IntN(len(benchTitles))]
		q := "'"
		if strings.Contains(title, "'") {
			q = `"`
		}
		items[i] = fmt.Sprintf("%s%d. %s (%d %s)%s", q, i, title, stars, unit, q)
	}
	prompt := "The user is a male. His job is programmer. His age is 25-34.\n" +
		"He watched the following movies in order in the past, and rated them:\n" +
		"[" + strings.Join(items, ", ") + "]\n" +
		"Based on the movies he has watched, deduce if he will like the movie ***" + benchTitles[r.IntN(len(benchTitles))] + "***.\n" +
		"Note that more stars the user rated the movie, the user like the movie more.\n" +
		"You should ONLY tell me yes or no."
	return "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: " + prompt + " ASSISTANT:"
}

func benchEncode(b *testing.B, noCache bool) {
	tk, err := Load(filepath.Join(testenv.Shared(b, "fixtures/tokenizer/llama"), "tokenizer.model"))
	if err != nil {
		b.Fatal(err)
	}
	tk.noCache = noCache
	r := rand.New(rand.NewPCG(1, 2))
	prompts := make([]string, 256)
	for i := range prompts {
		prompts[i] = benchPrompt(r, 15)
	}
	tokens := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tokens += len(tk.Encode(prompts[i%len(prompts)], true))
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(tokens)/float64(b.N), "tokens/op")
}

// BenchmarkEncode encodes varied ReLLa prompts (~400 tokens) with the word cache.
func BenchmarkEncode(b *testing.B) { benchEncode(b, false) }

// BenchmarkEncodeNoCache is BenchmarkEncode with every word merged afresh.
func BenchmarkEncodeNoCache(b *testing.B) { benchEncode(b, true) }

// BenchmarkLoad reads the LLaMA tokenizer.model and tokenizer.json.
func BenchmarkLoad(b *testing.B) {
	dir := testenv.Shared(b, "fixtures/tokenizer/llama")
	for _, f := range []string{"tokenizer.model", "tokenizer.json"} {
		b.Run(f, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := Load(filepath.Join(dir, f)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
