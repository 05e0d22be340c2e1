package cpu

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

// reference is stories260K/reference.json: outputs of llama2.c's run.c.
type reference struct {
	Greedy struct {
		Prompt []int `json:"prompt"`
		Tokens []int `json:"tokens"`
	} `json:"greedy"`
	Sequences []struct {
		Name       string    `json:"name"`
		Tokens     []int     `json:"tokens"`
		Argmax     []int     `json:"argmax"`
		Margin     []float64 `json:"argmax_margin"`
		LogitsPos0 []float64 `json:"logits_pos0"`
		LogitsLast []float64 `json:"logits_last"`
	} `json:"sequences"`
}

func loadStories(t testing.TB) (*model.Model, reference) {
	dir := testenv.Shared(t, "fixtures/stories260K")
	m, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	b, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	return m, ref
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func maxAbsDiff(a []float32, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-b[i]))
	}
	return d
}

func TestStories260KReference(t *testing.T) {
	m, ref := loadStories(t)
	for _, dt := range []string{"float32", "float64"} {
		t.Run(dt, func(t *testing.T) {
			e, err := New(m, Options{DType: dt})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			ctx := context.Background()
			for _, s := range ref.Sequences {
				// logits at every prefix end via one call per prefix would be slow;
				// the last position and position 0 come from two calls.
				got, err := e.LastLogits(ctx, [][]int{s.Tokens, s.Tokens[:1]}, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s: max |diff| last %.2g, position 0 %.2g", s.Name, maxAbsDiff(got[0], s.LogitsLast), maxAbsDiff(got[1], s.LogitsPos0))
				if d := maxAbsDiff(got[0], s.LogitsLast); d > 1e-4 {
					t.Errorf("%s: last-position logits differ by %g", s.Name, d)
				}
				if d := maxAbsDiff(got[1], s.LogitsPos0); d > 1e-4 {
					t.Errorf("%s: position-0 logits differ by %g", s.Name, d)
				}
			}
		})
	}
}

// TestStories260KArgmax checks the argmax at every position of every
// sequence where the reference's top-1/top-2 margin exceeds 1e-3, from the
// final hidden states of one forward pass per sequence.
func TestStories260KArgmax(t *testing.T) {
	m, ref := loadStories(t)
	e, err := New(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	D, V := m.Config.HiddenSize, m.Config.VocabSize
	for _, s := range ref.Sequences {
		checked, bad := 0, 0
		err := e.runHidden(context.Background(), [][]int{s.Tokens}, func(_ int, h []float64) {
			for p := range s.Tokens {
				if s.Margin[p] <= 1e-3 {
					continue
				}
				best, bestV := 0, math.Inf(-1)
				for r := 0; r < V; r++ {
					if v := e.headDot(r, h[p*D:(p+1)*D]); v > bestV {
						best, bestV = r, v
					}
				}
				checked++
				if best != s.Argmax[p] {
					bad++
					if bad < 5 {
						t.Errorf("%s position %d: argmax %d, want %d", s.Name, p, best, s.Argmax[p])
					}
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if checked < len(s.Tokens)/2 {
			t.Errorf("%s: only %d positions checked", s.Name, checked)
		}
		t.Logf("%s: %d positions checked, %d wrong", s.Name, checked, bad)
	}
}

func TestStories260KGreedy(t *testing.T) {
	m, ref := loadStories(t)
	e, err := New(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	seq := append([]int(nil), ref.Greedy.Prompt...)
	for i, want := range ref.Greedy.Tokens {
		got, err := e.LastLogits(context.Background(), [][]int{seq}, nil)
		if err != nil {
			t.Fatal(err)
		}
		next := argmax(got[0])
		if next != want {
			t.Fatalf("greedy step %d: token %d, want %d (so far %v)", i, next, want, seq)
		}
		seq = append(seq, next)
	}
}
