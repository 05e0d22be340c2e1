package prompt

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/testenv"
)

// TestAuthorsDemo renders every sample of the shared ML-1M data (users
// 1-2999) with the five most recent history items and looks up the
// authors' released demo prompts byte for byte. 15 of the 17 test prompts
// have their user in the shared ratings and must be found with their label.
// None of the 84 train prompts can be: an independent check (matching their
// five rated history items against every user's ratings) finds no user
// among 1-2999 with that history, profile and target, so they come from
// users 3000 and up; the test counts them and requires that whatever is
// found carries its label.
func TestAuthorsDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 487,650 ratings")
	}
	dir := testenv.Shared(t, "data/ml-1m")
	demoDir := testenv.Shared(t, "data/rella-demo")
	opts := data.DefaultOptions()
	opts.Dataset, opts.Dir, opts.HistoryLen, opts.MinHistory = data.ML1M, dir, 5, 5
	ds, _, err := data.Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := mustNew(t, data.ML1M, DefaultOptions())
	rendered := make(map[string]int8)
	var hist []int32
	var buf []byte
	for _, split := range [][]data.Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			hist = Recent{}.Select(s, 5, hist)
			buf = b.AppendPrompt(buf[:0], ds, s, hist)
			rendered[string(buf)] = s.Label
		}
	}
	for _, c := range []struct {
		file      string
		total     int
		wantFound int
	}{{"test_5_simple.json", 17, 15}, {"train_5_simple_sampled.json", 84, 0}} {
		raw, err := os.ReadFile(filepath.Join(demoDir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		var demo []struct{ Input, Output string }
		if err := json.Unmarshal(raw, &demo); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if len(demo) != c.total {
			t.Fatalf("%s: %d prompts, want %d", c.file, len(demo), c.total)
		}
		found := 0
		for i, d := range demo {
			label, ok := rendered[d.Input]
			if !ok {
				continue
			}
			found++
			if got := Answer(label); got != d.Output {
				t.Errorf("%s[%d]: label %q, demo says %q", c.file, i, got, d.Output)
			}
		}
		t.Logf("%s: %d of %d demo prompts rendered byte for byte", c.file, found, len(demo))
		if found != c.wantFound {
			t.Errorf("%s: found %d prompts, want %d", c.file, found, c.wantFound)
		}
	}
}
