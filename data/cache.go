package data

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/internal/atomicfile"
)

// cacheVersion changes whenever the way samples are built changes, so that
// an older cache is rebuilt rather than reused.
const cacheVersion = "rella-data-v3" // v2: BookCrossing files already in UTF-8 are read as UTF-8; v3: ML-1M users keep their zip code

// CacheFile is the name of the cache Prepare keeps in its cache folder.
const CacheFile = "dataset.gob"

// cacheHeader opens a cache file; the Dataset and Report follow it.
type cacheHeader struct {
	Version     string
	Fingerprint string
}

// Prepare is Load with a cache: it reuses cacheDir/dataset.gob when the
// cache was built by this version of the reader from input files with the
// same contents (SHA-256) and with the same options that decide the samples,
// and otherwise loads the dataset and writes the cache atomically. The bool
// says whether the Dataset came from the cache. A damaged or unreadable cache
// is rebuilt, with a warning. An empty cacheDir means no cache.
func Prepare(ctx context.Context, opts Options, cacheDir string, log *slog.Logger) (*Dataset, *Report, bool, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, false, fmt.Errorf("data: invalid options: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cacheDir == "" {
		ds, rep, err := Load(ctx, opts, log)
		return ds, rep, false, err
	}
	fp, err := Fingerprint(opts)
	if err != nil {
		return nil, nil, false, err
	}
	path := filepath.Join(cacheDir, CacheFile)
	ds, rep, err := readCache(path, fp)
	switch {
	case err == nil:
		log.Info("data: reusing cached samples", "path", path)
		rep.warn(log)
		rep.Fingerprint = fp
		return ds, rep, true, nil
	case errors.Is(err, os.ErrNotExist):
		log.Debug("data: no cache yet", "path", path)
	case errors.Is(err, errStale):
		log.Info("data: cache is stale; rebuilding", "path", path)
	default:
		log.Warn("data: cache is unreadable; rebuilding", "path", path, "err", err)
	}
	ds, rep, err = Load(ctx, opts, log)
	if err != nil {
		return nil, nil, false, err
	}
	rep.Fingerprint = fp
	err = atomicfile.Write(path, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		enc := gob.NewEncoder(bw)
		if err := enc.Encode(cacheHeader{Version: cacheVersion, Fingerprint: fp}); err != nil {
			return err
		}
		if err := enc.Encode(ds); err != nil {
			return err
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("data: cache: %w", err)
	}
	return ds, rep, false, nil
}

var errStale = errors.New("cache built from other inputs or options")

func readCache(path, fp string) (*Dataset, *Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	dec := gob.NewDecoder(bufio.NewReaderSize(f, 1<<20))
	var h cacheHeader
	if err := dec.Decode(&h); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	if h.Version != cacheVersion || h.Fingerprint != fp {
		return nil, nil, errStale
	}
	ds := new(Dataset)
	rep := new(Report)
	if err := dec.Decode(ds); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	if err := dec.Decode(rep); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	// gob leaves empty slices nil; keep the splits non-nil as Load does.
	for _, s := range []*[]Sample{&ds.Train, &ds.Valid, &ds.Test} {
		if *s == nil {
			*s = []Sample{}
		}
	}
	return ds, rep, nil
}

// InputFiles returns the paths of the original files the dataset is read
// from.
func InputFiles(opts Options) []string {
	var names []string
	switch opts.Dataset {
	case ML1M:
		names = []string{"users.dat", "movies.dat", "ratings.dat"}
	case ML25M:
		names = []string{"movies.csv", "ratings.csv"}
	case BookCrossing:
		names = []string{"BX-Users.csv", "BX-Books.csv", "BX-Book-Ratings.csv"}
	}
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join(opts.Dir, n)
	}
	return paths
}

// Fingerprint identifies what the samples are built from: the reader's
// version, the options that decide the samples (not the folder's name,
// HistoryLen or MaxEvalSamples), and each input file's name, size and
// SHA-256.
func Fingerprint(opts Options) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\nmin_history=%d skip_malformed=%t ml25m_train=%d ml25m_test=%d seed=%d id_order=%s\n",
		cacheVersion, opts.Dataset, opts.MinHistory, opts.SkipMalformed, opts.ML25MTrainSamples, opts.ML25MTestSamples, opts.SampleSeed, opts.idOrder())
	for _, p := range InputFiles(opts) {
		f, err := os.Open(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("data: dataset file %s is missing: %w", p, err)
			}
			return "", fmt.Errorf("data: %w", err)
		}
		fh := sha256.New()
		n, err := io.Copy(fh, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("data: read %s: %w", p, err)
		}
		fmt.Fprintf(h, "%s %d %x\n", filepath.Base(p), n, fh.Sum(nil))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
