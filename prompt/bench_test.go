package prompt

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rella-project/rella/data"
)

// BenchmarkPrompt renders ML-1M-like prompts with K = 15 recent items
// (titles of ML-1M length, a few with apostrophes) into a reused buffer.
func BenchmarkPrompt(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	ds := &data.Dataset{Kind: data.ML1M}
	for i := 0; i < 3000; i++ {
		title := fmt.Sprintf("Some Movie Title Number %d (19%02d)", i, i%100)
		if i%10 == 0 {
			title = fmt.Sprintf("Ulee's Gold %d (1997)", i)
		}
		ds.Items = append(ds.Items, data.Item{ID: fmt.Sprint(i + 1), Title: title, Genre: "Drama"})
	}
	var samples []data.Sample
	for u := 0; u < 100; u++ {
		g := "male"
		if u%3 == 0 {
			g = "female"
		}
		ds.Users = append(ds.Users, data.User{ID: fmt.Sprint(u + 1), Gender: g, Age: "25-34", Occupation: "technician/engineer"})
		var seq []data.Event
		for i := 0; i < 100; i++ {
			seq = append(seq, data.Event{Item: int32(rng.IntN(len(ds.Items))), Rating: float32(rng.IntN(5) + 1)})
			if i >= 15 {
				samples = append(samples, data.Sample{User: int32(u), Pos: int32(i)})
			}
		}
		ds.Seqs = append(ds.Seqs, seq)
	}
	bl, err := New(data.ML1M, DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	var hist []int32
	buf := make([]byte, 0, 4096)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		s := samples[n%len(samples)]
		n++
		hist = Recent{}.Select(s, 15, hist)
		buf = bl.AppendPrompt(buf[:0], ds, s, hist)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "prompts/s")
}
