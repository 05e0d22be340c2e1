package data

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

var (
	demoTarget  = regexp.MustCompile(`deduce if (?:he|she) will like the movie \*\*\*(.*)\*\*\*\.`)
	demoHistory = regexp.MustCompile(`['"]\d+\. (.*?) \((\d) stars?\)['"](?:, |\]$)`)
)

// TestML1MMatchesAuthorsDemo checks the ordering rules against the authors'
// released prompts: every demo sample whose user is in the shared ratings must
// be one of our samples, with the same five most recent history items, their
// ratings, and the label.
func TestML1MMatchesAuthorsDemo(t *testing.T) {
	dir := testenv.Shared(t, "data/ml-1m")
	demoDir := testenv.Shared(t, "data/rella-demo")
	opts := DefaultOptions()
	opts.Dir = dir
	ds, _, err := Load(context.Background(), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := func(target string, label int8, hist []string) string {
		return fmt.Sprintf("%s|%d|%s", target, label, strings.Join(hist, "|"))
	}
	// Only movies the demo names matter; skipping the others keeps this fast.
	named := make(map[int32]bool)
	for _, name := range []string{"test_5_simple.json", "train_5_simple_sampled.json"} {
		raw, err := os.ReadFile(filepath.Join(demoDir, name))
		if err != nil {
			t.Fatal(err)
		}
		var demo []struct{ Input string }
		if err := json.Unmarshal(raw, &demo); err != nil {
			t.Fatal(err)
		}
		var all strings.Builder
		for _, d := range demo {
			all.WriteString(d.Input)
		}
		for i, it := range ds.Items {
			if strings.Contains(all.String(), it.Title) {
				named[int32(i)] = true
			}
		}
	}
	have := make(map[string]bool)
	for _, split := range [][]Sample{ds.Train, ds.Valid, ds.Test} {
		for _, s := range split {
			if !named[ds.Target(s).Item] {
				continue
			}
			h := ds.History(s)
			h = h[len(h)-5:]
			var hs []string
			for _, e := range h {
				hs = append(hs, fmt.Sprintf("%s (%g)", ds.Items[e.Item].Title, e.Rating))
			}
			have[key(ds.Items[ds.Target(s).Item].Title, s.Label, hs)] = true
		}
	}
	// rated[title+" ("+rating+")"] = users who gave the movie that rating.
	rated := make(map[string]map[int32]int64) // -> user -> time
	for u, seq := range ds.Seqs {
		for _, e := range seq {
			if !named[e.Item] {
				continue
			}
			k := fmt.Sprintf("%s (%g)", ds.Items[e.Item].Title, e.Rating)
			if rated[k] == nil {
				rated[k] = make(map[int32]int64)
			}
			rated[k][int32(u)] = e.Time
		}
	}
	// present says whether some user rated all of the history keys as given,
	// at non-decreasing times, and then the target with a rating that fits
	// the label: then the demo sample is that user's.
	present := func(keys []string, target string, label int8) bool {
		for u, t := range rated[keys[0]] {
			all := true
			for _, k := range keys[1:] {
				tk, ok := rated[k][u]
				all = all && ok && tk >= t
				t = tk
			}
			fits := false
			for r := 1; r <= 5; r++ {
				if tk, ok := rated[fmt.Sprintf("%s (%d)", target, r)][u]; ok && (r > 3) == (label == 1) && tk >= t {
					fits = true
				}
			}
			if all && fits {
				return true
			}
		}
		return false
	}
	matched, total, absent := 0, 0, 0
	for _, name := range []string{"test_5_simple.json", "train_5_simple_sampled.json"} {
		raw, err := os.ReadFile(filepath.Join(demoDir, name))
		if err != nil {
			t.Fatal(err)
		}
		var demo []struct{ Input, Output string }
		if err := json.Unmarshal(raw, &demo); err != nil {
			t.Fatal(err)
		}
		for i, d := range demo {
			total++
			lines := strings.Split(d.Input, "\n")
			m := demoTarget.FindStringSubmatch(d.Input)
			if m == nil || len(lines) < 3 {
				t.Fatalf("%s[%d]: cannot parse %q", name, i, d.Input)
			}
			var hs []string
			for _, h := range demoHistory.FindAllStringSubmatch(lines[2], -1) {
				hs = append(hs, fmt.Sprintf("%s (%s)", h[1], h[2]))
			}
			if len(hs) != 5 {
				t.Fatalf("%s[%d]: parsed %d history items from %q", name, i, len(hs), lines[2])
			}
			label := int8(0)
			if d.Output == "Yes." {
				label = 1
			}
			switch {
			case have[key(m[1], label, hs)]:
				matched++
			case !present(hs, m[1], label):
				absent++ // the demo user is not among the shared users 1-2999
			default:
				t.Errorf("%s[%d]: no sample with target %q history %q label %d", name, i, m[1], hs, label)
			}
		}
	}
	t.Logf("%d of %d demo samples matched; %d belong to users absent from the shared ratings", matched, total, absent)
	if matched == 0 {
		t.Errorf("no demo sample matched")
	}
}
