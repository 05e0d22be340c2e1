package retrieval

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/safetensors"
)

// ErrStale reports a stored file whose fingerprint differs from the one
// the current inputs produce.
var ErrStale = errors.New("stale fingerprint")

// File names of the SUBR artefacts under OUTPUT_DIR/subr.
const (
	EmbeddingsFile  = "embeddings.safetensors"   // raw item embeddings (items x D)
	VectorsFile     = "item_vectors.safetensors" // vectors similarities use (items x d)
	metaFingerprint = "fingerprint"
)

// Tensor names inside the artefacts.
const (
	tensorEmbeddings = "embeddings"
	tensorVectors    = "vectors"
	tensorItemIDs    = "item_ids"
	tensorPositions  = "positions"
)

// SelectionPath is OUTPUT_DIR/subr/selection_{split}_k{K}.safetensors.
func SelectionPath(outputDir, split string, k int) string {
	return filepath.Join(outputDir, "subr", fmt.Sprintf("selection_%s_k%d.safetensors", split, k))
}

// Matrix is a stored matrix of per-item rows: row i belongs to item
// ItemIDs[i], an index into Dataset.Items.
type Matrix struct {
	Rows        [][]float32
	ItemIDs     []int64
	Fingerprint string
}

// Check returns an error wrapping ErrStale unless m.Fingerprint == want.
func (m *Matrix) Check(want string) error {
	if m.Fingerprint != want {
		return fmt.Errorf("retrieval: fingerprint %.12s, want %.12s: %w", m.Fingerprint, want, ErrStale)
	}
	return nil
}

// ForItems returns the rows ordered by item index 0..n-1, requiring every
// item to appear exactly once.
func (m *Matrix) ForItems(n int) ([][]float32, error) {
	if len(m.ItemIDs) != n {
		return nil, fmt.Errorf("retrieval: %d stored rows for %d items", len(m.ItemIDs), n)
	}
	out := make([][]float32, n)
	for i, id := range m.ItemIDs {
		if id < 0 || id >= int64(n) {
			return nil, fmt.Errorf("retrieval: stored row %d names item %d of %d", i, id, n)
		}
		if out[id] != nil {
			return nil, fmt.Errorf("retrieval: item %d stored twice", id)
		}
		out[id] = m.Rows[i]
	}
	return out, nil
}

// SaveEmbeddings writes the raw item embeddings (tensor `embeddings`, F32
// items x D; `item_ids`, I64) with the fingerprint in the metadata.
func SaveEmbeddings(path string, emb [][]float32, itemIDs []int64, fingerprint string) error {
	return saveMatrix(path, tensorEmbeddings, emb, itemIDs, fingerprint)
}

// LoadEmbeddings reads a file SaveEmbeddings wrote.
func LoadEmbeddings(path string) (*Matrix, error) {
	return loadMatrix(path, tensorEmbeddings)
}

// SaveItemVectors writes the vectors similarities are computed from
// (tensor `vectors`, F32 items x d; `item_ids`, I64).
func SaveItemVectors(path string, vec [][]float32, itemIDs []int64, fingerprint string) error {
	return saveMatrix(path, tensorVectors, vec, itemIDs, fingerprint)
}

// LoadItemVectors reads a file SaveItemVectors wrote.
func LoadItemVectors(path string) (*Matrix, error) {
	return loadMatrix(path, tensorVectors)
}

func saveMatrix(path, name string, rows [][]float32, ids []int64, fingerprint string) error {
	if len(rows) != len(ids) {
		return fmt.Errorf("retrieval: save %s: %d rows and %d item ids", path, len(rows), len(ids))
	}
	d := 0
	if len(rows) > 0 {
		d = len(rows[0])
	}
	flat := make([]float32, 0, len(rows)*d)
	for i, r := range rows {
		if len(r) != d {
			return fmt.Errorf("retrieval: save %s: row %d has length %d, want %d", path, i, len(r), d)
		}
		flat = append(flat, r...)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("retrieval: save %s: %w", path, err)
	}
	err := safetensors.Write(path, []safetensors.Tensor{
		safetensors.F32(name, []int{len(rows), d}, flat),
		safetensors.I64(tensorItemIDs, []int{len(ids)}, ids),
	}, map[string]string{metaFingerprint: fingerprint})
	if err != nil {
		return fmt.Errorf("retrieval: save %s: %w", path, err)
	}
	return nil
}

func loadMatrix(path, name string) (*Matrix, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("retrieval: load: %w", err)
	}
	defer f.Close()
	info, ok := f.Info(name)
	if !ok || len(info.Shape) != 2 {
		return nil, fmt.Errorf("retrieval: load %s: no 2-d tensor %q", path, name)
	}
	flat, err := f.Float32s(name)
	if err != nil {
		return nil, fmt.Errorf("retrieval: load: %w", err)
	}
	ids, err := f.Int64s(tensorItemIDs)
	if err != nil {
		return nil, fmt.Errorf("retrieval: load: %w", err)
	}
	n, d := info.Shape[0], info.Shape[1]
	if len(ids) != n {
		return nil, fmt.Errorf("retrieval: load %s: %d item ids for %d rows", path, len(ids), n)
	}
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = flat[i*d : (i+1)*d : (i+1)*d]
	}
	return &Matrix{Rows: rows, ItemIDs: ids, Fingerprint: f.Metadata()[metaFingerprint]}, nil
}

// Fingerprint hashes its parts (length-prefixed, so part boundaries count)
// into a hex SHA-256.
func Fingerprint(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// VectorsFingerprint is the fingerprint of the item vectors derived from
// embeddings with fingerprint emb under o's dim and similarity.
func VectorsFingerprint(emb string, o Options) string {
	if o.Similarity == SimDot {
		return Fingerprint("item-vectors", emb, SimDot)
	}
	return Fingerprint("item-vectors", emb, SimCosine, strconv.Itoa(o.Dim))
}

// ItemVectors turns raw embeddings into the vectors similarities use:
// PCA to o.Dim and unit rows for cosine, the raw rows (copied) for dot.
func ItemVectors(emb [][]float32, o Options) ([][]float32, error) {
	switch o.Similarity {
	case SimCosine:
		return PCA(emb, o.Dim)
	case SimDot:
		n, d, err := checkRows(emb)
		if err != nil {
			return nil, fmt.Errorf("retrieval: item vectors: %w", err)
		}
		flat := make([]float32, n*d)
		out := make([][]float32, n)
		for i, r := range emb {
			out[i] = flat[i*d : (i+1)*d : (i+1)*d]
			copy(out[i], r)
		}
		return out, nil
	}
	return nil, fmt.Errorf("retrieval.similarity: unknown %q", o.Similarity)
}

// SelectionFingerprint identifies a selection: the item vectors, K, the
// dataset's item sequences and the exact list of samples.
func SelectionFingerprint(vectors string, k int, ds *data.Dataset, samples []data.Sample) string {
	h := sha256.New()
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	put(uint64(len(vectors)))
	h.Write([]byte(vectors))
	put(uint64(k))
	put(uint64(len(ds.Kind)))
	h.Write([]byte(ds.Kind))
	put(uint64(len(ds.Items)))
	put(uint64(len(ds.Seqs)))
	buf := make([]byte, 0, 4096)
	for _, seq := range ds.Seqs {
		buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(len(seq)))
		for _, e := range seq {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(e.Item))
			if len(buf) >= 4000 {
				h.Write(buf)
				buf = buf[:0]
			}
		}
		h.Write(buf)
	}
	put(uint64(len(samples)))
	buf = buf[:0]
	for _, s := range samples {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(s.User))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(s.Pos))
		if len(buf) >= 4000 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))
}

// SaveSelection writes sel (tensor `positions`, I32 samples x K, -1 in
// unused slots) atomically with its fingerprint.
func SaveSelection(path string, sel *Selection, fingerprint string) error {
	b := make([]byte, 4*len(sel.Positions))
	for i, p := range sel.Positions {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(p))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("retrieval: save %s: %w", path, err)
	}
	err := safetensors.Write(path, []safetensors.Tensor{{
		Name: tensorPositions, DType: safetensors.DTypeI32, Shape: []int{sel.Len(), sel.K}, Data: b,
	}}, map[string]string{metaFingerprint: fingerprint, "k": strconv.Itoa(sel.K)})
	if err != nil {
		return fmt.Errorf("retrieval: save %s: %w", path, err)
	}
	return nil
}

// LoadSelection reads a selection SaveSelection wrote, rejecting it (an
// error wrapping ErrStale) unless its fingerprint is want.
func LoadSelection(path, want string) (*Selection, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("retrieval: load: %w", err)
	}
	defer f.Close()
	if got := f.Metadata()[metaFingerprint]; got != want {
		return nil, fmt.Errorf("retrieval: load %s: fingerprint %.12s, want %.12s: %w", path, got, want, ErrStale)
	}
	info, ok := f.Info(tensorPositions)
	if !ok || info.DType != safetensors.DTypeI32 || len(info.Shape) != 2 || info.Shape[1] <= 0 {
		return nil, fmt.Errorf("retrieval: load %s: no I32 samples x K tensor %q", path, tensorPositions)
	}
	raw, err := f.Bytes(tensorPositions)
	if err != nil {
		return nil, fmt.Errorf("retrieval: load: %w", err)
	}
	n, k := info.Shape[0], info.Shape[1]
	sel := &Selection{K: k, Positions: make([]int32, n*k), Counts: make([]int32, n)}
	for i := range sel.Positions {
		sel.Positions[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	for i := 0; i < n; i++ {
		c := 0
		for c < k && sel.Positions[i*k+c] >= 0 {
			c++
		}
		for j := c; j < k; j++ {
			if sel.Positions[i*k+j] != -1 {
				return nil, fmt.Errorf("retrieval: load %s: sample %d has a position after padding", path, i)
			}
		}
		sel.Counts[i] = int32(c)
	}
	return sel, nil
}

// LoadOrSelect returns the selection stored at path when its fingerprint
// matches the current inputs; otherwise it runs s.SelectAll and saves the
// result there. vectors is the fingerprint of the selector's item vectors.
func LoadOrSelect(ctx context.Context, path string, s *Selector, vectors string, samples []data.Sample, k int) (*Selection, error) {
	fp := SelectionFingerprint(vectors, k, s.ds, samples)
	sel, err := LoadSelection(path, fp)
	if err == nil && sel.Len() == len(samples) && sel.K == k {
		return sel, nil
	}
	if err != nil && !errors.Is(err, ErrStale) && !errors.Is(err, os.ErrNotExist) && s.log != nil {
		s.log.Warn("retrieval: unreadable selection, recomputing", "path", path, "err", err)
	}
	sel, err = s.SelectAll(ctx, samples, k)
	if err != nil {
		return nil, err
	}
	if err := SaveSelection(path, sel, fp); err != nil {
		return nil, err
	}
	return sel, nil
}

// LoadOrBuildVectors returns the item vectors for a catalogue of nItems
// items, ordered by item index, and their fingerprint. It reads
// dir/embeddings.safetensors (which must hold every item once) and reuses
// dir/item_vectors.safetensors when that was built from those embeddings
// under o's similarity and dim; otherwise it builds the vectors
// (ItemVectors) and saves them there.
func LoadOrBuildVectors(dir string, o Options, nItems int, log *slog.Logger) ([][]float32, string, error) {
	emb, err := LoadEmbeddings(filepath.Join(dir, EmbeddingsFile))
	if err != nil {
		return nil, "", err
	}
	fp := VectorsFingerprint(emb.Fingerprint, o)
	vecPath := filepath.Join(dir, VectorsFile)
	if m, err := LoadItemVectors(vecPath); err == nil && m.Check(fp) == nil {
		if v, err := m.ForItems(nItems); err == nil {
			return v, fp, nil
		}
	}
	rows, err := emb.ForItems(nItems)
	if err != nil {
		return nil, "", fmt.Errorf("retrieval: %s: %w", EmbeddingsFile, err)
	}
	start := time.Now()
	vec, err := ItemVectors(rows, o)
	if err != nil {
		return nil, "", err
	}
	ids := make([]int64, nItems)
	for i := range ids {
		ids[i] = int64(i)
	}
	if err := SaveItemVectors(vecPath, vec, ids, fp); err != nil {
		return nil, "", err
	}
	if log != nil {
		log.Info("retrieval: item vectors built", "items", nItems, "dim", len(vec[0]), "similarity", o.Similarity, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	return vec, fp, nil
}
