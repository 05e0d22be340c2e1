package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/prompt"
	"github.com/rella-project/rella/retrieval"
)

// Paths of the SUBR artefacts.
func (r *Runner) embeddingsPath() string { return r.subrPath("item_embeddings.safetensors") }
func (r *Runner) vectorsPath() string    { return r.subrPath(retrieval.VectorsFile) }

// itemTexts returns every item's SUBR text (RELLA.md 4.1) in the Vicuna template.
func itemTexts(ds *data.Dataset) []string {
	texts := make([]string, len(ds.Items))
	for i, it := range ds.Items {
		texts[i] = prompt.Vicuna(prompt.ItemText(ds.Kind, it))
	}
	return texts
}

// Embed returns the items' mean-pooled final-norm hidden states (RELLA.md
// 4.2), from OUTPUT_DIR/subr/item_embeddings.safetensors when its fingerprint
// (model files + item texts) matches, else computed with the engine and saved.
func (r *Runner) Embed(ctx context.Context, ds *data.Dataset) (*retrieval.Matrix, error) {
	if err := r.generateModel(); err != nil {
		return nil, err
	}
	texts := itemTexts(ds)
	mfp, err := modelFingerprint(r.Cfg.Model.Path)
	if err != nil {
		return nil, err
	}
	fp := retrieval.Fingerprint("item-embeddings", mfp, strings.Join(texts, "\x00"))
	path := r.embeddingsPath()
	if mat, err := retrieval.LoadEmbeddings(path); err == nil && mat.Check(fp) == nil && len(mat.Rows) == len(ds.Items) {
		r.Log.Info("embed: embeddings are up to date, skipped", "path", path, "items", len(mat.Rows))
		return mat, nil
	}
	m, err := r.openModel()
	if err != nil {
		return nil, err
	}
	defer m.Close()
	tok, err := r.loadTokenizer()
	if err != nil {
		return nil, err
	}
	seqs := make([][]int, len(texts))
	for i, t := range texts {
		seqs[i] = tok.Encode(t, true)
	}
	eng, err := r.openEngine(m, nil)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	bar := newBar(r.Progress, len(seqs), "embed", "items")
	emb, err := retrieval.EmbedItems(ctx, eng, seqs, r.Cfg.Retrieval.BatchSize, func(done, total int) { bar.Set(done) })
	bar.Finish()
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(emb))
	for i := range ids {
		ids[i] = int64(i)
	}
	if err := retrieval.SaveEmbeddings(path, emb, ids, fp); err != nil {
		return nil, err
	}
	r.Log.Info("embed: done", "path", path, "items", len(emb), "dim", len(emb[0]))
	return &retrieval.Matrix{Rows: emb, ItemIDs: ids, Fingerprint: fp}, nil
}

// itemVectors returns the vectors similarities use (PCA + unit rows for
// cosine, raw rows for dot) and their fingerprint, reusing
// OUTPUT_DIR/subr/item_vectors.safetensors when it is up to date.
func (r *Runner) itemVectors(ctx context.Context, ds *data.Dataset) ([][]float32, string, error) {
	emb, err := r.Embed(ctx, ds)
	if err != nil {
		return nil, "", err
	}
	fp := retrieval.VectorsFingerprint(emb.Fingerprint, r.Cfg.Retrieval)
	if mat, err := retrieval.LoadItemVectors(r.vectorsPath()); err == nil && mat.Check(fp) == nil {
		if rows, err := mat.ForItems(len(ds.Items)); err == nil {
			return rows, fp, nil
		}
	}
	rows, err := emb.ForItems(len(ds.Items))
	if err != nil {
		return nil, "", err
	}
	vec, err := retrieval.ItemVectors(rows, r.Cfg.Retrieval)
	if err != nil {
		return nil, "", err
	}
	if err := retrieval.SaveItemVectors(r.vectorsPath(), vec, emb.ItemIDs, fp); err != nil {
		return nil, "", err
	}
	r.Log.Info("retrieve: item vectors", "items", len(vec), "dim", len(vec[0]), "similarity", r.Cfg.Retrieval.Similarity)
	return vec, fp, nil
}

// SUBRSelector returns the selector that picks each sample's history by
// similarity to its target (embedding the items first if needed).
func (r *Runner) SUBRSelector(ctx context.Context, ds *data.Dataset) (*retrieval.Selector, error) {
	vec, _, err := r.itemVectors(ctx, ds)
	if err != nil {
		return nil, err
	}
	return retrieval.NewSelector(ctx, ds, vec, retrieval.SelectorOptions{Logger: r.Log})
}

// Retrieve computes the SUBR top-K selection of every sample of every split
// and stores it under OUTPUT_DIR/subr (reused when up to date).
func (r *Runner) Retrieve(ctx context.Context, ds *data.Dataset) error {
	vec, fp, err := r.itemVectors(ctx, ds)
	if err != nil {
		return err
	}
	sel, err := retrieval.NewSelector(ctx, ds, vec, retrieval.SelectorOptions{Logger: r.Log})
	if err != nil {
		return err
	}
	k := r.Cfg.Data.HistoryLen
	for _, split := range []string{"train", "valid", "test"} {
		samples, _ := ds.Split(split)
		if len(samples) == 0 {
			continue
		}
		path := r.subrPath(filepath.Base(retrieval.SelectionPath(r.Cfg.OutputDir, split, k)))
		if _, err := retrieval.LoadOrSelect(ctx, path, sel, fp, samples, k); err != nil {
			return fmt.Errorf("retrieve %s: %w", split, err)
		}
		r.Log.Info("retrieve: selection", "split", split, "samples", len(samples), "k", k, "path", path)
	}
	return nil
}

// modelFingerprint identifies a checkpoint cheaply: config.json and, for
// each safetensors file, its size, header and first and last 64 KiB.
func modelFingerprint(dir string) (string, error) {
	if err := model.CheckDir(dir); err != nil {
		return "", fmt.Errorf("model.path: %w", err)
	}
	h := sha256.New()
	names, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return "", err
	}
	bins, err := filepath.Glob(filepath.Join(dir, "*.bin")) // PyTorch weights (model.Load reads them too)
	if err != nil {
		return "", err
	}
	names = append(names, bins...)
	sort.Strings(names)
	for _, p := range append([]string{filepath.Join(dir, "config.json")}, names...) {
		if err := hashFileSample(h, p); err != nil {
			return "", fmt.Errorf("model fingerprint: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashFileSample(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s:%d:", filepath.Base(path), st.Size())
	const chunk = 64 << 10
	if st.Size() <= 2*chunk {
		_, err = io.Copy(w, f)
		return err
	}
	if _, err := io.CopyN(w, f, chunk); err != nil {
		return err
	}
	if _, err := f.Seek(-chunk, io.SeekEnd); err != nil {
		return err
	}
	_, err = io.Copy(w, f)
	return err
}
