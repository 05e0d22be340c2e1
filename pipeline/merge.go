package pipeline

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rella-project/rella/internal/atomicfile"
	"github.com/rella-project/rella/internal/progress"
	"github.com/rella-project/rella/retrieval"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/shard"
)

// ErrNoShards is wrapped by MergeScores' error when a variant has no shards at all.
var ErrNoShards = errors.New("no shards")

// MergeScores puts together the shards that `score --shard` wrote for split:
// for every variant Score evaluates (recency, and SUBR when
// retrieval.enabled) it checks that every shard of one count is finished,
// made with the fingerprint of the current settings and covers the samples
// contiguously, then writes the variant's predictions.jsonl (the shards'
// files concatenated in order: byte for byte what an unsharded run writes)
// and its metrics.json (computed from the merged predictions; equal to the
// unsharded run's but for time and commit). A variant none of whose shards
// exist is an error naming the command that makes them.
func (r *Runner) MergeScores(ctx context.Context, ds *data.Dataset, split string) ([]Result, error) {
	samples, jobs, err := r.scoreJobs(ctx, ds, split)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, j := range jobs {
		if _, err := os.Stat(shard.ShardsDir(j.dir)); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("merge %s: %w in %s: run `rella score --shard I/N` (or --shard auto) for this config and split first", j.v.Dir(), ErrNoShards, shard.ShardsDir(j.dir))
		}
		ms, err := shard.Merge(j.dir, j.rec.Fingerprint, len(samples), predictionOutputs, j.dir)
		if err != nil {
			return nil, fmt.Errorf("merge %s: %w", j.v.Dir(), err)
		}
		labels, p, err := readPredictions(filepath.Join(j.dir, PredictionsFile), len(samples))
		if err != nil {
			return nil, fmt.Errorf("merge %s: %w", j.v.Dir(), err)
		}
		for i, s := range samples {
			if labels[i] != int(s.Label) {
				return nil, fmt.Errorf("merge %s: prediction %d has label %d, the data says %d", j.v.Dir(), i, labels[i], s.Label)
			}
		}
		res := metrics.Compute(labels, p)
		j.rec.Result = res
		stamp(j.rec)
		if err := writeJSON(filepath.Join(j.dir, MetricsFile), j.rec); err != nil {
			return nil, err
		}
		// an unsharded pass interrupted earlier is superseded by the merge
		if err := os.Remove(filepath.Join(j.dir, partialFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		r.Log.Info("merge: done", "variant", j.v.Dir(), "shards", len(ms), "n", res.N, "auc", progress.Fixed(res.AUC, 4), "logloss", progress.Fixed(res.LogLoss, 4), "acc", progress.Fixed(res.Accuracy, 4)) // full precision: metrics.json
		out = append(out, Result{Variant: j.v, Dir: j.dir, K: r.Cfg.Data.HistoryLen, Metrics: res})
	}
	return out, nil
}

// readPredictions reads the labels and P(Yes) of a predictions.jsonl that
// must hold samples 0..n-1 in order.
func readPredictions(path string, n int) ([]int, []float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	labels := make([]int, 0, n)
	p := make([]float64, 0, n)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		var q Prediction
		if err := json.Unmarshal(sc.Bytes(), &q); err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", path, len(p)+1, err)
		}
		if q.Index != len(p) {
			return nil, nil, fmt.Errorf("%s:%d: sample index %d, expected %d", path, len(p)+1, q.Index, len(p))
		}
		labels = append(labels, q.Label)
		p = append(p, q.P)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(p) != n {
		return nil, nil, fmt.Errorf("%s: %d predictions, expected %d", path, len(p), n)
	}
	return labels, p, nil
}

// embeddingRowsFile is the raw float32 rows (little-endian, item order) an
// embedding shard writes.
const embeddingRowsFile = "item_embeddings.f32"

// embedShardsRoot is the folder whose shards/ holds the embedding shards:
// the SUBR folder (OUTPUT_DIR/subr/shards/IIIII-of-NNNNN/).
func (r *Runner) embedShardsRoot() string { return filepath.Dir(r.embeddingsPath()) }

// EmbedShard embeds the items of shard sp (a contiguous slice of the items)
// into OUTPUT_DIR/subr/shards/IIIII-of-NNNNN/ (raw float32 rows and
// shard.json), unless that shard is already finished with the fingerprint
// of the current model, device, dtype and items. MergeEmbeddings puts the
// shards together.
func (r *Runner) EmbedShard(ctx context.Context, ds *data.Dataset, sp shard.Spec) error {
	sp.Unit = embedChunk // the chunks (and so the batches) of an unsharded run
	texts := itemTexts(ds)
	fp, err := r.embeddingsFingerprint(texts)
	if err != nil {
		return err
	}
	root := r.embedShardsRoot()
	outputs := []shard.Output{{Name: embeddingRowsFile}}
	m, done, err := shard.Done(root, sp, len(texts), fp, outputs)
	if err != nil {
		return fmt.Errorf("embed shard %s: %w", sp, err)
	}
	if done {
		r.Log.Info("embed: shard already finished, skipped", "shard", sp.String(), "items", fmt.Sprintf("[%d,%d)", m.Lo, m.Hi))
		return nil
	}
	dir, err := shard.Begin(root, sp)
	if err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	lo, hi := sp.Range(len(texts))
	emb, err := r.embedTexts(ctx, texts[lo:hi], filepath.Join(dir, embeddingRowsFile+".partial"), fp)
	if err != nil {
		return err
	}
	dim := 0
	if len(emb) > 0 {
		dim = len(emb[0])
	}
	buf := make([]byte, 0, 4*len(emb)*dim)
	for _, row := range emb {
		for _, v := range row {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, embeddingRowsFile), buf); err != nil {
		return fmt.Errorf("embed shard %s: %w", sp, err)
	}
	outputs[0].BytesPerItem = 4 * dim
	if _, err := shard.Commit(root, sp, len(texts), fp, outputs); err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	os.Remove(filepath.Join(dir, embeddingRowsFile+".partial"))
	r.Log.Info("embed: shard done", "shard", sp.String(), "items", fmt.Sprintf("[%d,%d)", lo, hi), "of", len(texts), "dim", dim)
	return nil
}

// MergeEmbeddings puts together the item-embedding shards that `embed
// --shard` wrote: every shard present, made with the fingerprint of the
// current model, device, dtype and items, then saves
// subr/item_embeddings.safetensors as an unsharded run does. It returns
// false, doing nothing, when there are no embedding shards.
func (r *Runner) MergeEmbeddings(ctx context.Context, ds *data.Dataset) (bool, error) {
	root := r.embedShardsRoot()
	if _, err := os.Stat(shard.ShardsDir(root)); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	texts := itemTexts(ds)
	fp, err := r.embeddingsFingerprint(texts)
	if err != nil {
		return false, err
	}
	ms, err := shard.Check(root, fp, len(texts), []shard.Output{{Name: embeddingRowsFile}})
	if err != nil {
		return false, fmt.Errorf("merge item embeddings: %w", err)
	}
	emb := make([][]float32, 0, len(texts))
	dim := -1
	for _, m := range ms {
		path := filepath.Join(shard.Dir(root, m.Spec()), embeddingRowsFile)
		b, err := os.ReadFile(path)
		if err != nil {
			return false, fmt.Errorf("merge item embeddings: %w", err)
		}
		n := m.Hi - m.Lo
		if n == 0 {
			continue
		}
		if len(b)%(4*n) != 0 || (dim >= 0 && len(b) != 4*n*dim) {
			return false, fmt.Errorf("merge item embeddings: %s has %d bytes, not %d rows of dimension %d", path, len(b), n, dim)
		}
		dim = len(b) / (4 * n)
		for i := 0; i < n; i++ {
			row := make([]float32, dim)
			for j := range row {
				row[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*(i*dim+j):]))
			}
			emb = append(emb, row)
		}
	}
	ids := make([]int64, len(emb))
	for i := range ids {
		ids[i] = int64(i)
	}
	if err := retrieval.SaveEmbeddings(r.embeddingsPath(), emb, ids, fp); err != nil {
		return false, err
	}
	r.Log.Info("merge: item embeddings", "path", r.embeddingsPath(), "shards", len(ms), "items", len(emb), "dim", dim)
	return true, nil
}
