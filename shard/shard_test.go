package shard

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/atomicfile"
)

func env(kv ...string) Lookup {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParse(t *testing.T) {
	for in, want := range map[string]Spec{"0/1": Whole, "3/8": {Index: 3, Count: 8}, " 7 / 8 ": {Index: 7, Count: 8}} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
		if again, _ := Parse(got.String()); again != got {
			t.Errorf("Parse(%q.String()) = %v", got, again)
		}
	}
	for _, in := range []string{"", "3", "8/8", "-1/4", "1/0", "a/4", "1/b", "auto"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

// TestRange checks the slices against dealing the items one by one to the
// shards in turn (which gives the first n%N shards one more item), laid end
// to end in shard order.
func TestRange(t *testing.T) {
	for n := 0; n <= 60; n++ {
		for count := 1; count <= 9; count++ {
			sizes := make([]int, count)
			for j := 0; j < n; j++ {
				sizes[j%count]++
			}
			start := 0
			for i := 0; i < count; i++ {
				lo, hi := Spec{Index: i, Count: count}.Range(n)
				if lo != start || hi != start+sizes[i] {
					t.Fatalf("n=%d: shard %d/%d = [%d,%d), want [%d,%d)", n, i, count, lo, hi, start, start+sizes[i])
				}
				start = hi
			}
			if start != n {
				t.Fatalf("n=%d N=%d: slices end at %d", n, count, start)
			}
		}
	}
	// The paper's ML-1M test split over 8 shards.
	if lo, hi := (Spec{Index: 7, Count: 8}).Range(97002); lo != 84877 || hi != 97002 {
		t.Errorf("7/8 of 97002 = [%d,%d), want [84877,97002)", lo, hi)
	}
}

// TestRangeUnits: with Unit u the slices are those of dealing the
// ceil(n/u) units (the last one shorter) to the shards in turn, laid end to
// end: every boundary but n a multiple of u.
func TestRangeUnits(t *testing.T) {
	for n := 0; n <= 50; n++ {
		for count := 1; count <= 5; count++ {
			for u := 0; u <= 7; u++ {
				units := 0
				if n > 0 {
					units = (n-1)/max(u, 1) + 1
				}
				sizes := make([]int, count)
				for j := 0; j < units; j++ {
					sizes[j%count]++
				}
				start := 0
				for i := 0; i < count; i++ {
					lo, hi := Spec{Index: i, Count: count, Unit: u}.Range(n)
					want := min(start+sizes[i]*max(u, 1), n)
					if lo != start || hi != want {
						t.Fatalf("n=%d unit=%d: shard %d/%d = [%d,%d), want [%d,%d)", n, u, i, count, lo, hi, start, want)
					}
					start = hi
				}
				if start != n {
					t.Fatalf("n=%d N=%d unit=%d: slices end at %d", n, count, u, start)
				}
			}
		}
	}
	if err := (Spec{Index: 0, Count: 2, Unit: -1}).Validate(); err == nil {
		t.Error("a negative unit was accepted")
	}
}

func TestAuto(t *testing.T) {
	ok := []struct {
		name  string
		env   Lookup
		flag  int
		want  Spec
		wantS string
	}{
		{"slurm count", env("SLURM_ARRAY_TASK_ID", "3", "SLURM_ARRAY_TASK_COUNT", "8"), 0, Spec{Index: 3, Count: 8}, "SLURM_ARRAY_TASK_COUNT=8"},
		{"slurm min max from 1", env("SLURM_ARRAY_TASK_ID", "1", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "4", "SLURM_ARRAY_TASK_COUNT", "4", "SLURM_ARRAY_TASK_STEP", "1"), 0, Spec{Index: 0, Count: 4}, "SLURM_ARRAY_TASK_MIN=1"},
		{"slurm min max only", env("SLURM_ARRAY_TASK_ID", "12", "SLURM_ARRAY_TASK_MIN", "10", "SLURM_ARRAY_TASK_MAX", "13"), 4, Spec{Index: 2, Count: 4}, "SLURM_ARRAY_TASK_MAX=13"},
		{"slurm wins over rank", env("SLURM_ARRAY_TASK_ID", "0", "SLURM_ARRAY_TASK_COUNT", "2", "RANK", "5", "WORLD_SIZE", "6"), 0, Spec{Index: 0, Count: 2}, "SLURM"},
		{"k8s flag", env("JOB_COMPLETION_INDEX", "5"), 6, Spec{Index: 5, Count: 6}, "--shards 6"},
		{"k8s env", env("JOB_COMPLETION_INDEX", "0", "RELLA_SHARDS", "3"), 0, Spec{Index: 0, Count: 3}, "RELLA_SHARDS=3"},
		{"k8s flag and env agree", env("JOB_COMPLETION_INDEX", "2", "RELLA_SHARDS", "3"), 3, Spec{Index: 2, Count: 3}, "JOB_COMPLETION_INDEX=2"},
		{"torchrun", env("RANK", "1", "WORLD_SIZE", "2", "LOCAL_RANK", "1"), 0, Spec{Index: 1, Count: 2}, "WORLD_SIZE=2"},
	}
	for _, c := range ok {
		got, from, err := Auto(c.env, c.flag)
		if err != nil || got != c.want || !strings.Contains(from, c.wantS) {
			t.Errorf("%s: Auto = %v, %q, %v; want %v from %q", c.name, got, from, err, c.want, c.wantS)
		}
	}
	bad := []struct {
		name string
		env  Lookup
		flag int
		say  []string // every one must be in the message
	}{
		{"nothing", env(), 0, []string{"SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "RANK", "--shard I/N"}},
		{"slurm no count", env("SLURM_ARRAY_TASK_ID", "3"), 0, []string{"SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"}},
		{"slurm id past count", env("SLURM_ARRAY_TASK_ID", "8", "SLURM_ARRAY_TASK_COUNT", "8"), 0, []string{"SLURM_ARRAY_TASK_ID=8", "SLURM_ARRAY_TASK_MIN"}},
		{"slurm gaps", env("SLURM_ARRAY_TASK_ID", "4", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "4", "SLURM_ARRAY_TASK_COUNT", "2"), 0, []string{"gaps", "SLURM_ARRAY_TASK_COUNT=2"}},
		{"slurm step", env("SLURM_ARRAY_TASK_ID", "2", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_MAX", "6", "SLURM_ARRAY_TASK_STEP", "2"), 0, []string{"SLURM_ARRAY_TASK_STEP=2"}},
		{"slurm only min", env("SLURM_ARRAY_TASK_ID", "2", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_COUNT", "4"), 0, []string{"SLURM_ARRAY_TASK_MAX"}},
		{"slurm vs flag", env("SLURM_ARRAY_TASK_ID", "2", "SLURM_ARRAY_TASK_COUNT", "4"), 8, []string{"4 shards", "--shards 8"}},
		{"slurm not a number", env("SLURM_ARRAY_TASK_ID", "x", "SLURM_ARRAY_TASK_COUNT", "4"), 0, []string{`SLURM_ARRAY_TASK_ID="x"`}},
		{"k8s no count", env("JOB_COMPLETION_INDEX", "2"), 0, []string{"JOB_COMPLETION_INDEX=2", "--shards", "RELLA_SHARDS"}},
		{"k8s index past count", env("JOB_COMPLETION_INDEX", "3", "RELLA_SHARDS", "3"), 0, []string{"index 3", "3 shards"}},
		{"flag vs env", env("JOB_COMPLETION_INDEX", "0", "RELLA_SHARDS", "3"), 4, []string{"--shards 4", "RELLA_SHARDS=3"}},
		{"rank only", env("RANK", "0"), 0, []string{"WORLD_SIZE is not set"}},
		{"world only", env("WORLD_SIZE", "2"), 0, []string{"RANK is not set"}},
		{"rank past world", env("RANK", "2", "WORLD_SIZE", "2"), 0, []string{"RANK=2", "WORLD_SIZE=2", "out of range"}},
	}
	for _, c := range bad {
		got, _, err := Auto(c.env, c.flag)
		if err == nil {
			t.Errorf("%s: Auto = %v, want an error", c.name, got)
			continue
		}
		for _, s := range c.say {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not say %q", c.name, err, s)
			}
		}
	}
}

// predictions makes n JSON lines of varied length, like predictions.jsonl.
func predictions(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = fmt.Appendf(nil, `{"index":%d,"user":%d,"label":%d,"p_yes":%.17g,"title":%q}`+"\n",
			i, r.IntN(6040), r.IntN(2), r.Float64(), strings.Repeat("é", r.IntN(5)))
	}
	return lines
}

var outs = []Output{{Name: "predictions.jsonl", LinesPerItem: 1}, {Name: "rows.f32", BytesPerItem: 8}}

// writeShard writes the slice of lines (and 8 bytes per item of rows.f32)
// the way a scoring job would, then commits it.
func writeShard(t *testing.T, root string, s Spec, lines [][]byte, fp string) {
	t.Helper()
	lo, hi := s.Range(len(lines))
	if err := atomicfile.WriteFile(filepath.Join(Dir(root, s), "predictions.jsonl"), bytes.Join(lines[lo:hi], nil)); err != nil {
		t.Fatal(err)
	}
	rows := make([]byte, 0, 8*(hi-lo))
	for i := lo; i < hi; i++ {
		rows = fmt.Appendf(rows, "%08d", i)
	}
	if err := atomicfile.WriteFile(filepath.Join(Dir(root, s), "rows.f32"), rows); err != nil {
		t.Fatal(err)
	}
	if _, err := Commit(root, s, len(lines), fp, outs); err != nil {
		t.Fatal(err)
	}
}

// TestMergeEqualsUnsharded: shards given by Slurm array variables, finished
// in a random order, merge into exactly the bytes of the unsharded output,
// for counts that divide the items, that do not, and that exceed them.
func TestMergeEqualsUnsharded(t *testing.T) {
	lines := predictions(103)
	whole := bytes.Join(lines, nil)
	var wholeRows []byte
	for i := range lines {
		wholeRows = fmt.Appendf(wholeRows, "%08d", i)
	}
	for _, n := range []int{1, 2, 4, 7, 103, 110} {
		root := t.TempDir()
		order := rand.New(rand.NewPCG(uint64(n), 9)).Perm(n)
		for _, task := range order {
			// sbatch --array=1-N: IDs start at 1.
			s, _, err := Auto(env("SLURM_ARRAY_TASK_ID", fmt.Sprint(task+1), "SLURM_ARRAY_TASK_MIN", "1",
				"SLURM_ARRAY_TASK_MAX", fmt.Sprint(n), "SLURM_ARRAY_TASK_COUNT", fmt.Sprint(n)), 0)
			if err != nil {
				t.Fatal(err)
			}
			writeShard(t, root, s, lines, "fp1")
		}
		dst := filepath.Join(root, "merged")
		ms, err := Merge(root, "fp1", len(lines), outs, dst)
		if err != nil {
			t.Fatalf("N=%d: %v", n, err)
		}
		if len(ms) != n {
			t.Fatalf("N=%d: %d manifests", n, len(ms))
		}
		got, _ := os.ReadFile(filepath.Join(dst, "predictions.jsonl"))
		if !bytes.Equal(got, whole) {
			t.Fatalf("N=%d: merged predictions differ from the unsharded file (%d vs %d bytes)", n, len(got), len(whole))
		}
		gotRows, _ := os.ReadFile(filepath.Join(dst, "rows.f32"))
		if !bytes.Equal(gotRows, wholeRows) {
			t.Fatalf("N=%d: merged rows differ", n)
		}
		// total < 0: taken from the shards.
		if _, err := Check(root, "fp1", -1, outs); err != nil {
			t.Fatalf("N=%d: Check(total -1): %v", n, err)
		}
	}
}

func TestDone(t *testing.T) {
	lines := predictions(10)
	root := t.TempDir()
	s := Spec{Index: 1, Count: 3}
	if _, done, err := Done(root, s, 10, "fp", outs); err != nil || done {
		t.Fatalf("before writing: done=%v err=%v", done, err)
	}
	// Outputs written but not committed (killed before Commit): not done.
	if err := atomicfile.WriteFile(filepath.Join(Dir(root, s), "predictions.jsonl"), []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if _, done, _ := Done(root, s, 10, "fp", outs); done {
		t.Fatal("uncommitted shard reported done")
	}
	writeShard(t, root, s, lines, "fp")
	if m, done, err := Done(root, s, 10, "fp", outs); err != nil || !done || m.Lo != 4 || m.Hi != 7 {
		t.Fatalf("after commit: %+v done=%v err=%v", m, done, err)
	}
	if m, done, _ := Done(root, s, 10, "other", outs); done || m.Fingerprint != "fp" {
		t.Fatalf("other fingerprint: done=%v manifest %+v", done, m)
	}
	if _, done, _ := Done(root, s, 11, "fp", outs); done {
		t.Fatal("other total reported done")
	}
	if _, done, _ := Done(root, Spec{Index: 1, Count: 3, Unit: 4}, 10, "fp", outs); done {
		t.Fatal("a shard cut in other units reported done")
	}
	if err := os.WriteFile(filepath.Join(Dir(root, s), "rows.f32"), []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, done, _ := Done(root, s, 10, "fp", outs); done {
		t.Fatal("shard with a changed output reported done")
	}
	// A rerun with other settings begins by dropping the old manifest.
	writeShard(t, root, s, lines, "fp")
	dir, err := Begin(root, s)
	if err != nil || dir != Dir(root, s) {
		t.Fatalf("Begin = %q, %v", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ManifestName)); !os.IsNotExist(err) {
		t.Fatalf("Begin left the manifest: %v", err)
	}
	if _, done, _ := Done(root, s, 10, "fp", outs); done {
		t.Fatal("a begun shard reported done")
	}
	if _, err := Begin(root, Spec{Index: 3, Count: 3}); err == nil {
		t.Fatal("Begin of shard 3/3 accepted")
	}
}

func TestCommitChecksCounts(t *testing.T) {
	root := t.TempDir()
	s := Spec{Index: 0, Count: 2} // 3 of 5 items
	dir := Dir(root, s)
	write := func(p, r string) {
		t.Helper()
		if err := atomicfile.WriteFile(filepath.Join(dir, "predictions.jsonl"), []byte(p)); err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, "rows.f32"), []byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ p, r, say string }{
		{"a\nb\n", "000000000000000000000000", "2 lines, expected 3"},
		{"a\nb\nc", "000000000000000000000000", "no newline"},
		{"a\nb\nc\n", "0000000000000000", "16 bytes, expected 24"},
	} {
		write(c.p, c.r)
		if _, err := Commit(root, s, 5, "fp", outs); err == nil || !strings.Contains(err.Error(), c.say) {
			t.Errorf("Commit(%q, %q) = %v, want an error saying %q", c.p, c.r, err, c.say)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ManifestName)); !os.IsNotExist(err) {
		t.Fatalf("a refused commit left a manifest: %v", err)
	}
	write("a\nb\nc\n", "000000000000000000000000")
	if _, err := Commit(root, s, 5, "fp", outs); err != nil {
		t.Fatal(err)
	}
	if _, err := Commit(root, s, 5, "fp", []Output{{Name: "missing.jsonl"}}); err == nil {
		t.Fatal("Commit of a missing output accepted")
	}
}

func TestMergeErrors(t *testing.T) {
	lines := predictions(20)
	setup := func(t *testing.T) string {
		root := t.TempDir()
		for i := 0; i < 4; i++ {
			writeShard(t, root, Spec{Index: i, Count: 4}, lines, "fp")
		}
		return root
	}
	cases := []struct {
		name  string
		spoil func(t *testing.T, root string)
		say   []string
	}{
		{"missing", func(t *testing.T, root string) { os.RemoveAll(Dir(root, Spec{Index: 2, Count: 4})) }, []string{"missing 2/4"}},
		{"not committed", func(t *testing.T, root string) {
			os.Remove(filepath.Join(Dir(root, Spec{Index: 1, Count: 4}), ManifestName))
		},
			[]string{"missing 1/4", "started but not committed: 1/4"}},
		{"foreign fingerprint", func(t *testing.T, root string) { writeShard(t, root, Spec{Index: 3, Count: 4}, lines, "other") },
			[]string{"shard 3/4", `"other"`, `"fp"`}},
		{"other count", func(t *testing.T, root string) { writeShard(t, root, Spec{Index: 0, Count: 2}, lines, "fp") },
			[]string{"different shard counts", "2 shards (0/2)", "4 shards"}},
		{"other unit", func(t *testing.T, root string) { writeShard(t, root, Spec{Index: 2, Count: 4, Unit: 3}, lines, "fp") },
			[]string{"shard 2/4", "units of 3 items", "units of 1"}},
		{"other total", func(t *testing.T, root string) { writeShard(t, root, Spec{Index: 1, Count: 4}, predictions(24), "fp") },
			[]string{"shard 1/4", "24 items, expected 20"}},
		{"changed file", func(t *testing.T, root string) {
			p := filepath.Join(Dir(root, Spec{Index: 0, Count: 4}), "predictions.jsonl")
			data, _ := os.ReadFile(p)
			data[3] ^= 1
			os.WriteFile(p, data, 0o644)
		}, []string{"shard 0/4", "changed after the shard finished"}},
		{"moved manifest", func(t *testing.T, root string) {
			data, _ := os.ReadFile(filepath.Join(Dir(root, Spec{Index: 0, Count: 4}), ManifestName))
			os.WriteFile(filepath.Join(Dir(root, Spec{Index: 1, Count: 4}), ManifestName), data, 0o644)
		}, []string{"manifest of shard 0/4"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := setup(t)
			c.spoil(t, root)
			dst := filepath.Join(root, "merged")
			_, err := Merge(root, "fp", 20, outs, dst)
			if err == nil {
				t.Fatal("Merge accepted")
			}
			for _, s := range c.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("a refused merge wrote %s", dst)
			}
		})
	}
	if _, err := Merge(t.TempDir(), "fp", 20, outs, t.TempDir()); err == nil || !strings.Contains(err.Error(), "no shards") {
		t.Errorf("merge of nothing: %v", err)
	}
}
