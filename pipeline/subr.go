package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/atomicfile"
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
// (model files, device and dtype, item texts) matches, else computed with
// the engine and saved. The items are embedded in chunks of embedChunk,
// each appended to item_embeddings.safetensors.partial as it finishes, so
// that an interrupted run continues from the chunks it finished.
func (r *Runner) Embed(ctx context.Context, ds *data.Dataset) (*retrieval.Matrix, error) {
	return r.embed(ctx, ds, slog.LevelInfo)
}

// embed is Embed; reuse is the level of the "up to date" line (Debug when a
// later stage reuses the embeddings, where it would repeat on every stage).
func (r *Runner) embed(ctx context.Context, ds *data.Dataset, reuse slog.Level) (*retrieval.Matrix, error) {
	texts := itemTexts(ds)
	fp, err := r.embeddingsFingerprint(texts)
	if err != nil {
		return nil, err
	}
	path := r.embeddingsPath()
	if mat, err := retrieval.LoadEmbeddings(path); err == nil && mat.Check(fp) == nil && len(mat.Rows) == len(ds.Items) {
		r.Log.Log(ctx, reuse, "embed: embeddings are up to date, skipped", "path", path, "items", len(mat.Rows))
		return mat, nil
	} else if err == nil {
		r.Log.Info("embed: the saved embeddings were made from another model, device, dtype or item set; recomputing", "path", path)
	}
	emb, err := r.embedTexts(ctx, texts, path+".partial", fp)
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
	os.Remove(path + ".partial")
	r.Log.Info("embed: done", "path", path, "items", len(emb), "dim", len(emb[0]))
	return &retrieval.Matrix{Rows: emb, ItemIDs: ids, Fingerprint: fp}, nil
}

// embeddingsFingerprint identifies the item embeddings of texts: model
// files, device and dtype, and the texts.
func (r *Runner) embeddingsFingerprint(texts []string) (string, error) {
	mfp, err := r.modelFingerprint()
	if err != nil {
		return "", err
	}
	return retrieval.Fingerprint("item-embeddings", mfp, r.Cfg.Model.Device+"/"+r.Cfg.Model.DType+quantSuffix(r.quantize()), strings.Join(texts, "\x00")), nil
}

// embeddingsReady reports whether item_embeddings.safetensors is up to date.
func (r *Runner) embeddingsReady(ds *data.Dataset) (bool, error) {
	fp, err := r.embeddingsFingerprint(itemTexts(ds))
	if err != nil {
		return false, err
	}
	mat, err := retrieval.LoadEmbeddings(r.embeddingsPath())
	return err == nil && mat.Check(fp) == nil && len(mat.Rows) == len(ds.Items), nil
}

// embedTexts embeds texts with a fresh engine in chunks of embedChunk, each
// appended to partial (and kept there for an interrupted run to continue).
func (r *Runner) embedTexts(ctx context.Context, texts []string, partial, fp string) ([][]float32, error) {
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
	part, err := openEmbedPartial(partial, embedHeader{Fingerprint: fp, Items: len(seqs), Chunk: embedChunk})
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	defer part.f.Close()
	emb := part.rows
	if len(emb) > 0 {
		r.Log.Info("embed: continuing an interrupted run", "done", len(emb), "of", len(seqs))
	}
	bar := newBar(r.Progress, len(seqs), "embed", "items")
	for lo := len(emb); lo < len(seqs); lo += embedChunk {
		hi := min(lo+embedChunk, len(seqs))
		rows, err := retrieval.EmbedItems(ctx, eng, seqs[lo:hi], r.Cfg.Retrieval.BatchSize, func(done, total int) { bar.Set(lo + done) })
		if err != nil {
			bar.Finish()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("embed interrupted after %d of %d items, which are kept in %s; the same command continues from them: %w", lo, len(seqs), part.f.Name(), err)
			}
			return nil, err
		}
		if err := part.append(rows); err != nil {
			bar.Finish()
			return nil, fmt.Errorf("embed: %w", err)
		}
		emb = append(emb, rows...)
		if r.embedChunkDone != nil {
			r.embedChunkDone(len(emb))
		}
	}
	bar.Finish()
	return emb, nil
}

// embedChunk is how many items are embedded between two saves of the
// partial embeddings. The chunks do not depend on interruptions, so an
// interrupted and resumed run embeds the same batches as one that was not.
const embedChunk = 256

// embedHeader opens item_embeddings.safetensors.partial (a JSON line);
// chunks follow, each as uint32 rows, uint32 dim and rows*dim float32, all
// little-endian.
type embedHeader struct {
	Fingerprint string `json:"partial_of"`
	Items       int    `json:"items"`
	Chunk       int    `json:"chunk"`
}

type embedPartial struct {
	f    *os.File
	rows [][]float32
}

// openEmbedPartial opens path for appending chunks, keeping the complete
// chunks an earlier run with the same header left; anything else is
// replaced.
func openEmbedPartial(path string, h embedHeader) (*embedPartial, error) {
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	hb = append(hb, '\n')
	var rows [][]float32
	keep := int64(0)
	if b, err := os.ReadFile(path); err == nil && bytes.HasPrefix(b, hb) {
		off := len(hb)
		keep = int64(off)
		for off+8 <= len(b) {
			n := int(binary.LittleEndian.Uint32(b[off:]))
			dim := int(binary.LittleEndian.Uint32(b[off+4:]))
			end := off + 8 + 4*n*dim
			if n == 0 || dim == 0 || end > len(b) || len(rows)+n > h.Items {
				break
			}
			for i := 0; i < n; i++ {
				row := make([]float32, dim)
				for j := range row {
					row[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[off+8+4*(i*dim+j):]))
				}
				rows = append(rows, row)
			}
			off = end
			keep = int64(off)
		}
	}
	if keep == 0 {
		if err := atomicfile.WriteFile(path, hb); err != nil {
			return nil, err
		}
		keep = int64(len(hb))
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(keep); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(keep, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return &embedPartial{f: f, rows: rows}, nil
}

// append writes one chunk of rows and syncs it.
func (p *embedPartial) append(rows [][]float32) error {
	if len(rows) == 0 {
		return nil
	}
	dim := len(rows[0])
	b := make([]byte, 8+4*len(rows)*dim)
	binary.LittleEndian.PutUint32(b, uint32(len(rows)))
	binary.LittleEndian.PutUint32(b[4:], uint32(dim))
	for i, row := range rows {
		for j, v := range row {
			binary.LittleEndian.PutUint32(b[8+4*(i*dim+j):], math.Float32bits(v))
		}
	}
	if _, err := p.f.Write(b); err != nil {
		return err
	}
	return p.f.Sync()
}

// itemVectors returns the vectors similarities use (PCA + unit rows for
// cosine, raw rows for dot) and their fingerprint, reusing
// OUTPUT_DIR/subr/item_vectors.safetensors when it is up to date.
func (r *Runner) itemVectors(ctx context.Context, ds *data.Dataset) ([][]float32, string, error) {
	emb, err := r.embed(ctx, ds, slog.LevelDebug)
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
	sel, _, err := r.subrSelector(ctx, ds)
	return sel, err
}

// subrSelector is SUBRSelector that also returns the fingerprint of the item
// vectors it selects with.
func (r *Runner) subrSelector(ctx context.Context, ds *data.Dataset) (*retrieval.Selector, string, error) {
	vec, fp, err := r.itemVectors(ctx, ds)
	if err != nil {
		return nil, "", err
	}
	sel, err := retrieval.NewSelector(ctx, ds, vec, retrieval.SelectorOptions{Logger: r.Log})
	return sel, fp, err
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
		if _, err := retrieval.LoadSelection(path, retrieval.SelectionFingerprint(fp, k, ds, samples)); errors.Is(err, retrieval.ErrStale) {
			r.Log.Info("retrieve: the saved selection was made from other item vectors or samples; recomputing", "split", split, "path", path)
		}
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

// quantSuffix marks quantised embeddings in their fingerprint ("" when not).
func quantSuffix(q string) string {
	if q == "" {
		return ""
	}
	return "/" + q
}
