package shard

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/rella-project/rella/internal/atomicfile"
)

// ManifestName is the file in a shard's folder that marks it finished.
const ManifestName = "shard.json"

// Output is one file every shard writes into its folder and Merge
// concatenates: predictions.jsonl, or raw embedding rows. The per-item
// counts, when set, are checked by Commit and Merge: a JSON Lines file with
// one record per item has LinesPerItem 1 (and must end in a newline, so that
// the concatenation keeps every line whole); a file of fixed-size rows has
// BytesPerItem set to the row size.
type Output struct {
	Name         string
	LinesPerItem int
	BytesPerItem int
}

// File is what a manifest records of one output.
type File struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	Lines  int64  `json:"lines"`
	SHA256 string `json:"sha256"`
}

// Manifest describes a finished shard: which slice of which run it holds.
type Manifest struct {
	Index int `json:"index"`
	Count int `json:"count"`
	// Unit is the Spec's: slice boundaries are multiples of it (0: 1).
	Unit int `json:"unit,omitempty"`
	// Total is the number of items of the whole run; [Lo, Hi) the shard's.
	Total int `json:"total"`
	Lo    int `json:"lo"`
	Hi    int `json:"hi"`
	// Fingerprint identifies the run-defining settings (model, data, prompt
	// variant...): shards merge only when theirs are equal.
	Fingerprint string `json:"fingerprint"`
	Files       []File `json:"files"`
}

// Spec is the manifest's shard.
func (m Manifest) Spec() Spec { return Spec{Index: m.Index, Count: m.Count, Unit: m.Unit} }

// ShardsDir is the folder under root that holds every shard's folder.
func ShardsDir(root string) string { return filepath.Join(root, "shards") }

// Dir is the folder of shard s under root (root/shards/00003-of-00008): the
// caller writes the shard's outputs there (atomically, e.g. with
// internal/atomicfile), then calls Commit.
func Dir(root string, s Spec) string {
	return filepath.Join(ShardsDir(root), fmt.Sprintf("%05d-of-%05d", s.Index, s.Count))
}

var dirName = regexp.MustCompile(`^(\d+)-of-(\d+)$`)

// Begin prepares Dir(root, s) for a shard about to be (re)computed: it
// creates the folder and removes a manifest left by an earlier run (one
// made with other settings), so that a run killed halfway leaves a shard
// that is plainly unfinished, never an old manifest beside new outputs.
func Begin(root string, s Spec) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	dir := Dir(root, s)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("shard %s: %w", s, err)
	}
	if err := os.Remove(filepath.Join(dir, ManifestName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("shard %s: %w", s, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return "", fmt.Errorf("shard %s: %w", s, err)
	}
	return dir, nil
}

// Commit records shard s of a run of total items as finished: it checks
// every output in Dir(root, s) against the shard's item count, and writes
// the manifest (sizes, line counts, SHA-256) atomically, last, so a shard
// killed before Commit is simply not finished.
func Commit(root string, s Spec, total int, fingerprint string, outputs []Output) (Manifest, error) {
	if err := s.Validate(); err != nil {
		return Manifest{}, err
	}
	if total < 0 {
		return Manifest{}, fmt.Errorf("shard %s: total %d items: must not be negative", s, total)
	}
	if len(outputs) == 0 {
		return Manifest{}, fmt.Errorf("shard %s: no outputs to commit", s)
	}
	lo, hi := s.Range(total)
	m := Manifest{Index: s.Index, Count: s.Count, Total: total, Lo: lo, Hi: hi, Fingerprint: fingerprint}
	if s.unit() > 1 {
		m.Unit = s.Unit
	}
	dir := Dir(root, s)
	for _, o := range outputs {
		f, err := describe(filepath.Join(dir, o.Name), nil)
		if err != nil {
			return Manifest{}, fmt.Errorf("shard %s: %w", s, err)
		}
		f.Name = o.Name
		if err := checkCounts(filepath.Join(dir, o.Name), o, f, hi-lo); err != nil {
			return Manifest{}, fmt.Errorf("shard %s: %w", s, err)
		}
		m.Files = append(m.Files, f)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ManifestName), append(data, '\n')); err != nil {
		return Manifest{}, fmt.Errorf("shard %s: %w", s, err)
	}
	return m, nil
}

// Done reports whether shard s is already finished for this run (same
// count, total and fingerprint, every output present with its recorded
// size), so a rerun can skip it. A shard made with other settings is not
// done (the rerun redoes it); its manifest is returned so the caller can
// say so. A manifest that cannot be read is an error.
func Done(root string, s Spec, total int, fingerprint string, outputs []Output) (Manifest, bool, error) {
	m, err := ReadManifest(Dir(root, s))
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, false, nil
	}
	if err != nil {
		return Manifest{}, false, err
	}
	if m.Index != s.Index || m.Count != s.Count || m.Spec().unit() != s.unit() || m.Total != total || m.Fingerprint != fingerprint || len(m.Files) != len(outputs) {
		return m, false, nil
	}
	for i, o := range outputs {
		st, err := os.Stat(filepath.Join(Dir(root, s), o.Name))
		if err != nil || m.Files[i].Name != o.Name || st.Size() != m.Files[i].Bytes {
			return m, false, nil
		}
	}
	return m, true, nil
}

// ReadManifest reads dir/shard.json.
func ReadManifest(dir string) (Manifest, error) {
	path := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(path)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Merge checks the shards under root and concatenates each output in shard
// order into dstDir/<name> (atomically). Every shard 0..N-1 of one count N
// must be finished, made with fingerprint and for total items (total < 0
// takes it from the shards, which must agree), with slices that follow each
// other from 0 to total, and with outputs whose size and SHA-256 still match
// their manifest. Nothing is written unless all of that holds; the error
// names the shards at fault. It returns the manifests in shard order.
func Merge(root, fingerprint string, total int, outputs []Output, dstDir string) ([]Manifest, error) {
	ms, err := check(root, fingerprint, total, outputs)
	if err != nil {
		return nil, err
	}
	for i, o := range outputs {
		dst := filepath.Join(dstDir, o.Name)
		err := atomicfile.Write(dst, func(w io.Writer) error {
			for _, m := range ms {
				path := filepath.Join(Dir(root, m.Spec()), o.Name)
				f, err := describe(path, w)
				if err != nil {
					return err
				}
				if f.Bytes != m.Files[i].Bytes || f.SHA256 != m.Files[i].SHA256 {
					return fmt.Errorf("%s changed while merging", path)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("merge shards of %s: %w", root, err)
		}
	}
	return ms, nil
}

// Check does Merge's checks without writing anything.
func Check(root, fingerprint string, total int, outputs []Output) ([]Manifest, error) {
	return check(root, fingerprint, total, outputs)
}

func check(root, fingerprint string, total int, outputs []Output) ([]Manifest, error) {
	sd := ShardsDir(root)
	entries, err := os.ReadDir(sd)
	if err != nil {
		return nil, fmt.Errorf("merge: no shards under %s: %w", root, err)
	}
	var found []Manifest
	var unfinished []string
	counts := map[int][]string{}
	for _, e := range entries {
		mm := dirName.FindStringSubmatch(e.Name())
		if !e.IsDir() || mm == nil {
			continue
		}
		i, _ := strconv.Atoi(mm[1])
		n, _ := strconv.Atoi(mm[2])
		name := fmt.Sprintf("%d/%d", i, n)
		counts[n] = append(counts[n], name)
		m, err := ReadManifest(filepath.Join(sd, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			unfinished = append(unfinished, name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("merge: shard %s: %w", name, err)
		}
		if m.Index != i || m.Count != n {
			return nil, fmt.Errorf("merge: %s holds the manifest of shard %d/%d", filepath.Join(sd, e.Name()), m.Index, m.Count)
		}
		found = append(found, m)
	}
	if len(counts) == 0 {
		return nil, fmt.Errorf("merge: no shard folders (NNNNN-of-NNNNN) in %s", sd)
	}
	if len(counts) > 1 {
		var parts []string
		for n, names := range counts {
			parts = append(parts, fmt.Sprintf("%d shards (%s)", n, strings.Join(names, " ")))
		}
		sort.Strings(parts)
		return nil, fmt.Errorf("merge: %s mixes runs with different shard counts: %s; remove the folders of the old run", sd, strings.Join(parts, ", "))
	}
	var n int
	for c := range counts {
		n = c
	}
	byIndex := make([]*Manifest, n)
	for k := range found {
		byIndex[found[k].Index] = &found[k]
	}
	var missing []string
	for i, m := range byIndex {
		if m == nil {
			missing = append(missing, fmt.Sprintf("%d/%d", i, n))
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("merge: %d of %d shards in %s are not finished: missing %s", len(missing), n, sd, strings.Join(missing, " "))
		if len(unfinished) > 0 {
			msg += fmt.Sprintf(" (started but not committed: %s)", strings.Join(unfinished, " "))
		}
		return nil, errors.New(msg + "; run them (a rerun skips the finished ones)")
	}
	if total < 0 {
		total = byIndex[0].Total
	}
	next := 0
	ms := make([]Manifest, n)
	for i, m := range byIndex {
		if m.Fingerprint != fingerprint {
			return nil, fmt.Errorf("merge: shard %d/%d in %s was made with fingerprint %q, this run's is %q (other settings): rerun it or remove it",
				i, n, Dir(root, m.Spec()), m.Fingerprint, fingerprint)
		}
		if m.Total != total {
			return nil, fmt.Errorf("merge: shard %d/%d covers a run of %d items, expected %d", i, n, m.Total, total)
		}
		if u, u0 := m.Spec().unit(), byIndex[0].Spec().unit(); u != u0 {
			return nil, fmt.Errorf("merge: shard %d/%d was cut in units of %d items, shard 0/%d in units of %d (another batch size): rerun it or remove it", i, n, u, n, u0)
		}
		lo, hi := m.Spec().Range(total)
		if m.Lo != lo || m.Hi != hi || m.Lo != next {
			return nil, fmt.Errorf("merge: shard %d/%d holds items [%d, %d), expected [%d, %d) after item %d", i, n, m.Lo, m.Hi, lo, hi, next)
		}
		next = hi
		if len(m.Files) != len(outputs) {
			return nil, fmt.Errorf("merge: shard %d/%d has %d outputs, expected %d", i, n, len(m.Files), len(outputs))
		}
		for k, o := range outputs {
			rec := m.Files[k]
			path := filepath.Join(Dir(root, m.Spec()), o.Name)
			if rec.Name != o.Name {
				return nil, fmt.Errorf("merge: shard %d/%d: output %d is %q, expected %q", i, n, k, rec.Name, o.Name)
			}
			got, err := describe(path, nil)
			if err != nil {
				return nil, fmt.Errorf("merge: shard %d/%d: %w", i, n, err)
			}
			if got.Bytes != rec.Bytes || got.SHA256 != rec.SHA256 {
				return nil, fmt.Errorf("merge: shard %d/%d: %s has %d bytes (sha256 %.12s), its manifest says %d (%.12s): the file changed after the shard finished; rerun it",
					i, n, path, got.Bytes, got.SHA256, rec.Bytes, rec.SHA256)
			}
			if err := checkCounts(path, o, got, hi-lo); err != nil {
				return nil, fmt.Errorf("merge: shard %d/%d: %w", i, n, err)
			}
		}
		ms[i] = *m
	}
	if next != total {
		return nil, fmt.Errorf("merge: the shards cover items [0, %d), expected [0, %d)", next, total)
	}
	return ms, nil
}

// describe reads path, copying it to w when w is not nil, and returns its
// size, line count (an unterminated last line counts) and SHA-256.
func describe(path string, w io.Writer) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	var lines, size int64
	var last byte
	buf := make([]byte, 1<<16)
	for {
		k, err := f.Read(buf)
		if k > 0 {
			b := buf[:k]
			h.Write(b)
			lines += int64(bytes.Count(b, []byte{'\n'}))
			size += int64(k)
			last = b[k-1]
			if w != nil {
				if _, werr := w.Write(b); werr != nil {
					return File{}, werr
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return File{}, fmt.Errorf("read %s: %w", path, err)
		}
	}
	if size > 0 && last != '\n' {
		lines++ // an unterminated last line still counts; checkCounts refuses it where lines matter
	}
	return File{Name: filepath.Base(path), Bytes: size, Lines: lines, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func checkCounts(path string, o Output, f File, items int) error {
	if o.LinesPerItem > 0 {
		if want := int64(o.LinesPerItem * items); f.Lines != want {
			return fmt.Errorf("%s has %d lines, expected %d for %d items", path, f.Lines, want, items)
		}
		if f.Bytes > 0 {
			last, err := lastByte(path)
			if err != nil {
				return err
			}
			if last != '\n' {
				return fmt.Errorf("%s: the last line has no newline", path)
			}
		}
	}
	if o.BytesPerItem > 0 {
		if want := int64(o.BytesPerItem) * int64(items); f.Bytes != want {
			return fmt.Errorf("%s has %d bytes, expected %d for %d items of %d bytes", path, f.Bytes, want, items, o.BytesPerItem)
		}
	}
	return nil
}

func lastByte(path string) (byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, st.Size()-1); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return b[0], nil
}
