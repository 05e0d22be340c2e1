package cuda

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

// storiesReference is the part of stories260K/reference.json the tests use:
// logits of llama2.c's own C forward (run.c).
type storiesReference struct {
	Sequences []struct {
		Name       string    `json:"name"`
		Tokens     []int     `json:"tokens"`
		LogitsLast []float32 `json:"logits_last"`
	} `json:"sequences"`
}

func loadStories(t *testing.T) (*model.Model, storiesReference) {
	t.Helper()
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
	var ref storiesReference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatalf("reference.json: %v", err)
	}
	return m, ref
}

// TestForwardRefStories checks the composition of the kernel references
// against llama2.c's forward on the real stories260K model: all sequences in
// one packed batch, last-position logits within 1e-4.
func TestForwardRefStories(t *testing.T) {
	m, ref := loadStories(t)
	var seqs [][]int
	for _, s := range ref.Sequences {
		if testing.Short() && len(s.Tokens) > 64 {
			continue
		}
		seqs = append(seqs, s.Tokens)
	}
	last, mean, err := ForwardRef(m.Config, m.Tensor, F32, seqs)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for _, s := range ref.Sequences {
		if testing.Short() && len(s.Tokens) > 64 {
			continue
		}
		if err := Compare(s.Name+" logits_last", last[i], s.LogitsLast, 1e-4, 1e-4); err != nil {
			t.Error(err)
		}
		if len(mean[i]) != m.Config.HiddenSize {
			t.Errorf("%s: mean hidden has %d values, want %d", s.Name, len(mean[i]), m.Config.HiddenSize)
		}
		i++
	}
	// A sequence alone gives the same result as inside the packed batch.
	alone, meanAlone, err := ForwardRef(m.Config, m.Tensor, F32, seqs[1:2])
	if err != nil {
		t.Fatal(err)
	}
	if err := Compare("packed vs alone", alone[0], last[1], 1e-6, 1e-6); err != nil {
		t.Error(err)
	}
	if err := Compare("mean packed vs alone", meanAlone[0], mean[1], 1e-6, 1e-6); err != nil {
		t.Error(err)
	}
}
