// Package checkpoints writes and finds training checkpoints that survive
// crashes: each checkpoint is a folder checkpoint-<step> (checkpoint-<step>-m<k>
// when taken k micro-batches into an accumulation window) holding
//
//	adapter/adapter_config.json, adapter/adapter_model.safetensors   the LoRA adapter (PEFT format)
//	optimizer.safetensors   optimiser moments and any partial-window gradient sums (F32)
//	state.json              the trainer's state (opaque here)
//	config.yaml             a copy of the run's configuration, when given
//	other files             any Contents.Files (the trainer's trainer_state.json)
//	manifest.json           size and sha256 of every file above
//	COMPLETE                written last; holds the sha256 of manifest.json
//
// A checkpoint is built in a temporary folder, every file and folder is
// fsynced, and only then is it renamed into place, so a crash leaves either
// the old state or the new one. Latest skips (and reports) folders that are
// incomplete, truncated or corrupt.
package checkpoints

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/safetensors"
)

// File and folder names inside a checkpoint.
const (
	Prefix        = "checkpoint-"
	AdapterDir    = "adapter"
	OptimizerFile = "optimizer.safetensors"
	StateFile     = "state.json"
	ConfigFile    = "config.yaml"
	ManifestFile  = "manifest.json"
	CompleteFile  = "COMPLETE"
	format        = "rella-checkpoint/1"
)

// Contents is everything one checkpoint holds.
type Contents struct {
	Step  int // optimiser steps completed
	Micro int // micro-batches already accumulated towards step Step+1 (0 at a step boundary)

	LoRA      lora.Options    // adapter options, written to adapter/adapter_config.json
	BaseModel string          // base_model_name_or_path of the adapter
	Params    []*engine.Param // adapter tensors (values only)

	Tensors []safetensors.Tensor // extra tensors: optimiser moments, partial gradients
	State   any                  // marshalled (JSON) to state.json
	Config  []byte               // copied to config.yaml when non-nil
	// Files are extra files at the folder's top level, by plain file name
	// (trainer_state.json); covered by the manifest like the others.
	Files map[string][]byte
}

// Checkpoint names one checkpoint folder.
type Checkpoint struct {
	Dir   string
	Step  int
	Micro int
}

// Name returns the folder name of the checkpoint at (step, micro).
func Name(step, micro int) string {
	if micro == 0 {
		return Prefix + strconv.Itoa(step)
	}
	return fmt.Sprintf("%s%d-m%d", Prefix, step, micro)
}

// parseName is the inverse of Name.
func parseName(name string) (step, micro int, ok bool) {
	rest, found := strings.CutPrefix(name, Prefix)
	if !found {
		return 0, 0, false
	}
	s, m, hasMicro := strings.Cut(rest, "-m")
	step, err := strconv.Atoi(s)
	if err != nil || step < 0 || strconv.Itoa(step) != s {
		return 0, 0, false
	}
	if hasMicro {
		micro, err = strconv.Atoi(m)
		if err != nil || micro < 1 || strconv.Itoa(micro) != m {
			return 0, 0, false
		}
	}
	return step, micro, true
}

type manifest struct {
	Format string      `json:"format"`
	Step   int         `json:"step"`
	Micro  int         `json:"micro"`
	Files  []fileEntry `json:"files"`
}

type fileEntry struct {
	Path   string `json:"path"` // slash-separated, relative to the checkpoint folder
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Save writes c as root/Name(c.Step, c.Micro) atomically and returns the
// folder. An existing checkpoint of the same name is replaced only once the
// new one is complete. On error nothing new is left under root.
func Save(root string, c Contents) (dir string, err error) {
	if c.Step < 0 || c.Micro < 0 {
		return "", fmt.Errorf("checkpoints: save: negative step %d or micro %d", c.Step, c.Micro)
	}
	name := Name(c.Step, c.Micro)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("checkpoints: save %s: %w", name, err)
	}
	tmp, err := os.MkdirTemp(root, ".tmp-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("checkpoints: save %s: %w", name, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes 0700
		return "", fmt.Errorf("checkpoints: save %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	fail := func(e error) (string, error) { return "", fmt.Errorf("checkpoints: save %s: %w", name, e) }

	if err := lora.Save(filepath.Join(tmp, AdapterDir), c.LoRA, c.BaseModel, c.Params); err != nil {
		return fail(err)
	}
	if err := safetensors.Write(filepath.Join(tmp, OptimizerFile), c.Tensors, map[string]string{"format": "rella"}); err != nil {
		return fail(err)
	}
	state, err := json.MarshalIndent(c.State, "", "  ")
	if err != nil {
		return fail(fmt.Errorf("%s: %w", StateFile, err))
	}
	if err := writeFile(filepath.Join(tmp, StateFile), append(state, '\n')); err != nil {
		return fail(err)
	}
	if c.Config != nil {
		if err := writeFile(filepath.Join(tmp, ConfigFile), c.Config); err != nil {
			return fail(err)
		}
	}
	names := make([]string, 0, len(c.Files))
	for n := range c.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		switch n {
		case "", ".", "..", AdapterDir, OptimizerFile, StateFile, ConfigFile, ManifestFile, CompleteFile:
			return fail(fmt.Errorf("extra file name %q is reserved or empty", n))
		}
		if filepath.Base(n) != n {
			return fail(fmt.Errorf("extra file name %q is not a plain file name", n))
		}
		if err := writeFile(filepath.Join(tmp, n), c.Files[n]); err != nil {
			return fail(err)
		}
	}
	m := manifest{Format: format, Step: c.Step, Micro: c.Micro}
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tmp, p)
		size, sum, err := hashFile(p)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, fileEntry{Path: filepath.ToSlash(rel), Size: size, SHA256: sum})
		return nil
	})
	if err != nil {
		return fail(err)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fail(err)
	}
	mb = append(mb, '\n')
	if err := writeFile(filepath.Join(tmp, ManifestFile), mb); err != nil {
		return fail(err)
	}
	ms := sha256.Sum256(mb)
	if err := writeFile(filepath.Join(tmp, CompleteFile), []byte(hex.EncodeToString(ms[:])+"\n")); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Join(tmp, AdapterDir)); err != nil {
		return fail(err)
	}
	if err := syncDir(tmp); err != nil {
		return fail(err)
	}
	final := filepath.Join(root, name)
	var old string
	if _, err := os.Stat(final); err == nil {
		old = filepath.Join(root, ".old-"+name+"-"+filepath.Base(tmp))
		if err := os.Rename(final, old); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if old != "" {
			os.Rename(old, final)
		}
		return fail(err)
	}
	if err := syncDir(root); err != nil {
		return fail(err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	return final, nil
}

// writeFile creates path with data and fsyncs it.
func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// List returns the checkpoint folders under root (by name only, unverified),
// oldest first: by step, then by micro. A missing root is an empty list.
func List(root string) ([]Checkpoint, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoints: list: %w", err)
	}
	var out []Checkpoint
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		step, micro, ok := parseName(e.Name())
		if !ok {
			continue
		}
		out = append(out, Checkpoint{Dir: filepath.Join(root, e.Name()), Step: step, Micro: micro})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Step != out[j].Step {
			return out[i].Step < out[j].Step
		}
		return out[i].Micro < out[j].Micro
	})
	return out, nil
}

// Verify checks that dir is a complete checkpoint: COMPLETE present and
// matching manifest.json, and every listed file present with its size and
// sha256. The error says what is wrong.
func Verify(dir string) error {
	_, err := verify(dir)
	return err
}

func verify(dir string) (*manifest, error) {
	done, err := os.ReadFile(filepath.Join(dir, CompleteFile))
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %s: incomplete (no %s marker): %w", dir, CompleteFile, err)
	}
	mb, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %s: %w", dir, err)
	}
	ms := sha256.Sum256(mb)
	if strings.TrimSpace(string(done)) != hex.EncodeToString(ms[:]) {
		return nil, fmt.Errorf("checkpoints: %s: %s does not match the sha256 recorded in %s", dir, ManifestFile, CompleteFile)
	}
	var m manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("checkpoints: %s: %s: %w", dir, ManifestFile, err)
	}
	if m.Format != format {
		return nil, fmt.Errorf("checkpoints: %s: %s: format %q, want %q", dir, ManifestFile, m.Format, format)
	}
	have := map[string]bool{}
	for _, f := range m.Files {
		if f.Path == "" || strings.Contains(f.Path, "..") || filepath.IsAbs(f.Path) {
			return nil, fmt.Errorf("checkpoints: %s: %s: bad path %q", dir, ManifestFile, f.Path)
		}
		size, sum, err := hashFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			return nil, fmt.Errorf("checkpoints: %s: %w", dir, err)
		}
		if size != f.Size {
			return nil, fmt.Errorf("checkpoints: %s: %s has %d bytes, manifest says %d (truncated?)", dir, f.Path, size, f.Size)
		}
		if sum != f.SHA256 {
			return nil, fmt.Errorf("checkpoints: %s: %s: sha256 %s, manifest says %s", dir, f.Path, sum, f.SHA256)
		}
		have[f.Path] = true
	}
	for _, req := range []string{StateFile, OptimizerFile, AdapterDir + "/" + lora.ConfigFile, AdapterDir + "/" + lora.WeightsFile} {
		if !have[req] {
			return nil, fmt.Errorf("checkpoints: %s: %s not in %s", dir, req, ManifestFile)
		}
	}
	return &m, nil
}

// Latest returns the newest checkpoint under root that verifies. Folders
// that do not verify are skipped with a warning on log naming them and why.
// ok is false when there is none.
func Latest(root string, log *slog.Logger) (c Checkpoint, ok bool, err error) {
	all, err := List(root)
	if err != nil {
		return Checkpoint{}, false, err
	}
	for i := len(all) - 1; i >= 0; i-- {
		if err := Verify(all[i].Dir); err != nil {
			if log != nil {
				log.Warn("checkpoints: skipping a checkpoint that does not verify", "dir", all[i].Dir, "reason", err)
			}
			continue
		}
		return all[i], true, nil
	}
	return Checkpoint{}, false, nil
}

// Loaded is a checkpoint read back.
type Loaded struct {
	Checkpoint
	LoRA    lora.Options
	Params  []*engine.Param      // adapter tensors, lora.SortParams order
	Tensors map[string][]float32 // optimizer.safetensors, converted to float32
	Shapes  map[string][]int     // shapes of Tensors
	State   []byte               // state.json as written
	Config  []byte               // config.yaml, nil when none was saved
}

// Load verifies dir and reads it.
func Load(dir string) (*Loaded, error) {
	m, err := verify(dir)
	if err != nil {
		return nil, err
	}
	l := &Loaded{Checkpoint: Checkpoint{Dir: dir, Step: m.Step, Micro: m.Micro}, Tensors: map[string][]float32{}, Shapes: map[string][]int{}}
	if l.LoRA, l.Params, err = lora.Load(filepath.Join(dir, AdapterDir)); err != nil {
		return nil, fmt.Errorf("checkpoints: load %s: %w", dir, err)
	}
	f, err := safetensors.Open(filepath.Join(dir, OptimizerFile))
	if err != nil {
		return nil, fmt.Errorf("checkpoints: load %s: %w", dir, err)
	}
	defer f.Close()
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		v, err := f.Float32s(n)
		if err != nil {
			return nil, fmt.Errorf("checkpoints: load %s: tensor %q: %w", dir, n, err)
		}
		l.Tensors[n] = v
		l.Shapes[n] = info.Shape
	}
	if l.State, err = os.ReadFile(filepath.Join(dir, StateFile)); err != nil {
		return nil, fmt.Errorf("checkpoints: load %s: %w", dir, err)
	}
	l.Config, err = os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		l.Config, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoints: load %s: %w", dir, err)
	}
	return l, nil
}

// Prune keeps the newest keep complete checkpoints under root plus those for
// which protect returns true (e.g. the best one), and removes the other
// complete ones (COMPLETE first, so a crash mid-removal leaves a folder that
// Latest skips). Folders that do not verify are left for inspection, and
// leftover temporary folders from interrupted saves are removed. keep <= 0
// keeps everything.
func Prune(root string, keep int, protect func(Checkpoint) bool, log *slog.Logger) error {
	ents, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checkpoints: prune: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && (strings.HasPrefix(e.Name(), ".tmp-"+Prefix) || strings.HasPrefix(e.Name(), ".old-"+Prefix)) {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
	if keep <= 0 {
		return nil
	}
	all, err := List(root)
	if err != nil {
		return err
	}
	var complete []Checkpoint
	for _, c := range all {
		if _, err := os.Stat(filepath.Join(c.Dir, CompleteFile)); err == nil {
			complete = append(complete, c)
		}
	}
	for i, c := range complete {
		if i >= len(complete)-keep || (protect != nil && protect(c)) {
			continue
		}
		if err := os.Remove(filepath.Join(c.Dir, CompleteFile)); err != nil {
			return fmt.Errorf("checkpoints: prune %s: %w", c.Dir, err)
		}
		if err := os.RemoveAll(c.Dir); err != nil {
			return fmt.Errorf("checkpoints: prune %s: %w", c.Dir, err)
		}
		if log != nil {
			log.Debug("checkpoints: removed", "dir", c.Dir)
		}
	}
	return nil
}

// CompareFingerprint reports how current differs from saved, two maps of
// the settings that define a run (setting name -> value as text). A nil error
// means resuming continues the same run.
func CompareFingerprint(saved, current map[string]string) error {
	keys := map[string]bool{}
	for k := range saved {
		keys[k] = true
	}
	for k := range current {
		keys[k] = true
	}
	var diffs []string
	for k := range keys {
		s, sok := saved[k]
		c, cok := current[k]
		switch {
		case !sok:
			diffs = append(diffs, fmt.Sprintf("%s: (not set) -> %s", k, c))
		case !cok:
			diffs = append(diffs, fmt.Sprintf("%s: %s -> (not set)", k, s))
		case s != c:
			diffs = append(diffs, fmt.Sprintf("%s: %s -> %s", k, s, c))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return fmt.Errorf("%w: %s", ErrChangedRun, strings.Join(diffs, "; "))
}

// ErrChangedRun is wrapped by CompareFingerprint's error.
var ErrChangedRun = errors.New("checkpoint belongs to a different run")
