package retrieval

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEmbeddingsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rows := [][]float32{{1, -2.5, 3}, {0, 1e-30, -7}}
	ids := []int64{1, 0}
	for _, tc := range []struct {
		save func(string, [][]float32, []int64, string) error
		load func(string) (*Matrix, error)
		file string
	}{
		{SaveEmbeddings, LoadEmbeddings, EmbeddingsFile},
		{SaveItemVectors, LoadItemVectors, VectorsFile},
	} {
		path := filepath.Join(dir, "subr", tc.file)
		if err := tc.save(path, rows, ids, "fp-1"); err != nil {
			t.Fatal(err)
		}
		m, err := tc.load(path)
		if err != nil {
			t.Fatal(err)
		}
		if m.Fingerprint != "fp-1" || !slices.Equal(m.ItemIDs, ids) {
			t.Fatalf("%s: fingerprint %q ids %v", tc.file, m.Fingerprint, m.ItemIDs)
		}
		for i := range rows {
			if !slices.Equal(m.Rows[i], rows[i]) {
				t.Fatalf("%s: row %d = %v, want %v", tc.file, i, m.Rows[i], rows[i])
			}
		}
		if err := m.Check("fp-1"); err != nil {
			t.Fatal(err)
		}
		if err := m.Check("fp-2"); !errors.Is(err, ErrStale) {
			t.Fatalf("%s: other fingerprint: %v, want ErrStale", tc.file, err)
		}
		byItem, err := m.ForItems(2)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(byItem[0], rows[1]) || !slices.Equal(byItem[1], rows[0]) {
			t.Fatalf("%s: ForItems did not reorder by item id", tc.file)
		}
		if _, err := m.ForItems(3); err == nil {
			t.Fatalf("%s: ForItems with a missing item: want error", tc.file)
		}
	}
	// The two stores are distinct formats.
	if _, err := LoadItemVectors(filepath.Join(dir, "subr", EmbeddingsFile)); err == nil {
		t.Fatal("loading embeddings as item vectors: want error")
	}
	if err := SaveEmbeddings(filepath.Join(dir, "x"), rows, []int64{0}, ""); err == nil {
		t.Fatal("ids/rows mismatch: want error")
	}
}

func TestSelectionRoundTripAndStale(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	ds, samples := synthDataset(rng, 40, []int{3, 50, 12, 0, 31})
	vec := integerVectors(rng, 40, 4)
	ctx := context.Background()
	s, err := NewSelector(ctx, ds, vec, SelectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const k = 10
	want, err := s.SelectAll(ctx, samples, k)
	if err != nil {
		t.Fatal(err)
	}
	path := SelectionPath(t.TempDir(), "test", k)
	if !strings.HasSuffix(path, filepath.Join("subr", "selection_test_k10.safetensors")) {
		t.Fatalf("path %s", path)
	}
	fp := SelectionFingerprint("vec-a", k, ds, samples)
	if err := SaveSelection(path, want, fp); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSelection(path, fp)
	if err != nil {
		t.Fatal(err)
	}
	if got.K != k || !slices.Equal(got.Positions, want.Positions) || !slices.Equal(got.Counts, want.Counts) {
		t.Fatal("selection changed in the round trip")
	}
	// Any change of inputs changes the fingerprint and the file is rejected.
	others := []string{
		SelectionFingerprint("vec-b", k, ds, samples),
		SelectionFingerprint("vec-a", k+1, ds, samples),
		SelectionFingerprint("vec-a", k, ds, samples[1:]),
	}
	ds.Seqs[1][7].Item = (ds.Seqs[1][7].Item + 1) % 40
	others = append(others, SelectionFingerprint("vec-a", k, ds, samples))
	for i, o := range others {
		if o == fp {
			t.Fatalf("changed input %d keeps the fingerprint", i)
		}
		if _, err := LoadSelection(path, o); !errors.Is(err, ErrStale) {
			t.Fatalf("changed input %d: %v, want ErrStale", i, err)
		}
	}
}

func TestLoadOrSelectAndCached(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	ds, samples := synthDataset(rng, 30, []int{20, 45, 2})
	ctx := context.Background()
	s, err := NewSelector(ctx, ds, integerVectors(rng, 30, 3), SelectorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := SelectionPath(t.TempDir(), "valid", 6)
	first, err := LoadOrSelect(ctx, path, s, "v1", samples, 6)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSelection(path, SelectionFingerprint("v1", 6, ds, samples)); err != nil {
		t.Fatalf("LoadOrSelect did not save: %v", err)
	}
	again, err := LoadOrSelect(ctx, path, s, "v1", samples, 6)
	if err != nil || !slices.Equal(again.Positions, first.Positions) {
		t.Fatalf("reload: %v", err)
	}
	c, err := NewCached(first, samples[:30], s)
	if err == nil {
		t.Fatal("rows/samples mismatch: want error")
	}
	c, err = NewCached(first, samples, s)
	if err != nil {
		t.Fatal(err)
	}
	var buf []int32
	for i, smp := range samples {
		for _, k := range []int{6, 3} { // k = 3 goes to the fallback
			buf = c.Select(smp, k, buf)
			if want := s.Select(smp, k, nil); !slices.Equal(buf, want) {
				t.Fatalf("sample %d k %d: cached %v, selector %v", i, k, buf, want)
			}
		}
	}
}

func TestItemVectors(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	emb := randomRows(rng, 20, 8)
	dot, err := ItemVectors(emb, Options{Similarity: SimDot, Dim: 4})
	if err != nil {
		t.Fatal(err)
	}
	for i := range emb {
		if !slices.Equal(dot[i], emb[i]) {
			t.Fatal("dot similarity must use the raw vectors")
		}
	}
	cos, err := ItemVectors(emb, Options{Similarity: SimCosine, Dim: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(cos[0]) != 4 {
		t.Fatalf("cosine vectors have dim %d, want 4", len(cos[0]))
	}
	a := VectorsFingerprint("e", Options{Similarity: SimCosine, Dim: 512})
	if a == VectorsFingerprint("e", Options{Similarity: SimCosine, Dim: 256}) || a == VectorsFingerprint("e", Options{Similarity: SimDot, Dim: 512}) || a == VectorsFingerprint("f", Options{Similarity: SimCosine, Dim: 512}) {
		t.Fatal("vectors fingerprint ignores an input")
	}
	if VectorsFingerprint("e", Options{Similarity: SimDot, Dim: 1}) != VectorsFingerprint("e", Options{Similarity: SimDot, Dim: 2}) {
		t.Fatal("dot vectors do not depend on dim")
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	o := DefaultOptions()
	o.Dim, o.Similarity, o.BatchSize, o.TrainType, o.TrainSamples = 0, "l2", 0, "x", -1
	err := o.Validate()
	if err == nil {
		t.Fatal("bad options: want error")
	}
	for _, key := range []string{"retrieval.dim", "retrieval.similarity", "retrieval.batch_size", "retrieval.train_type", "retrieval.train_samples"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func TestLoadOrBuildVectors(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(19, 20))
	emb := randomRows(rng, 12, 9)
	// Stored in reverse item order: the result must come back by item index.
	rev := make([][]float32, 12)
	ids := make([]int64, 12)
	for i := range rev {
		rev[i], ids[i] = emb[11-i], int64(11-i)
	}
	if err := SaveEmbeddings(filepath.Join(dir, EmbeddingsFile), rev, ids, "emb-1"); err != nil {
		t.Fatal(err)
	}
	o := Options{Similarity: SimCosine, Dim: 4}
	v, fp, err := LoadOrBuildVectors(dir, o, 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := PCA(emb, 4)
	if err != nil {
		t.Fatal(err)
	}
	if fp != VectorsFingerprint("emb-1", o) {
		t.Fatal("wrong fingerprint")
	}
	for i := range want {
		if !slices.Equal(v[i], want[i]) {
			t.Fatalf("item %d: %v, want %v", i, v[i], want[i])
		}
	}
	// A second call reuses the stored vectors: overwrite them with a marker
	// under the right fingerprint and expect the marker back.
	marker := make([][]float32, 12)
	for i := range marker {
		marker[i] = []float32{float32(i), 0, 0, 0}
	}
	byIndex := make([]int64, 12)
	for i := range byIndex {
		byIndex[i] = int64(i)
	}
	if err := SaveItemVectors(filepath.Join(dir, VectorsFile), marker, byIndex, fp); err != nil {
		t.Fatal(err)
	}
	v, _, err = LoadOrBuildVectors(dir, o, 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v[5][0] != 5 {
		t.Fatal("fresh stored vectors were not reused")
	}
	// Another dim makes them stale: rebuilt from the embeddings.
	o.Dim = 3
	v, _, err = LoadOrBuildVectors(dir, o, 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(v[0]) != 3 {
		t.Fatalf("stale vectors reused: dim %d", len(v[0]))
	}
	if _, _, err := LoadOrBuildVectors(dir, o, 13, nil); err == nil {
		t.Fatal("embeddings missing an item: want error")
	}
}
