package model

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/safetensors"
)

// copyDir copies the regular files of src into a new temporary folder,
// skipping those skip names, and returns it.
func copyDir(t *testing.T, src string, skip ...string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || slices.Contains(skip, e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// The .bin fixtures load through model.Load and every tensor the engines
// ask for equals, bit for bit, the same tensor of the safetensors twin.
func TestLoadBinFixturesMatchTwin(t *testing.T) {
	for _, rel := range []string{"fixtures/stories260K-bin/fp16-sharded", "fixtures/tiny-vicuna-bin"} {
		dir := testenv.Shared(t, rel)
		m, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if m.Format != "pytorch" {
			t.Errorf("%s: format %q", rel, m.Format)
		}
		ref, err := safetensors.Open(filepath.Join(dir, "model.fp16.safetensors.ref"))
		if err != nil {
			t.Fatal(err)
		}
		names := append([]string{"lm_head.weight"}, ref.Names()...)
		for _, n := range names {
			got, err := m.Tensor(n)
			if err != nil {
				t.Fatal(err)
			}
			refName := n
			if _, ok := ref.Info(n); !ok && n == "lm_head.weight" {
				refName = "model.embed_tokens.weight" // tied
			}
			want, err := ref.Float32s(refName)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: tensor %s differs from the twin", rel, n)
			}
			if dt, _, b, err := m.Raw(refName); err != nil || dt != safetensors.DTypeF16 {
				t.Errorf("%s: Raw(%s): %s, %v", rel, refName, dt, err)
			} else if w, _ := ref.Bytes(refName); !bytes.Equal(b, w) {
				t.Errorf("%s: Raw(%s) bytes differ", rel, refName)
			}
		}
		ref.Close()
		m.Close()
	}
}

// A folder with both formats reads safetensors and says so at debug level.
func TestLoadPrefersSafetensors(t *testing.T) {
	src := testenv.Shared(t, "fixtures/tiny-vicuna-bin")
	dir := copyDir(t, src)
	if err := os.Rename(filepath.Join(dir, "model.fp16.safetensors.ref"), filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := LoadLogged(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Format != "safetensors" {
		t.Errorf("format %q, want safetensors", m.Format)
	}
	if s := logBuf.String(); !strings.Contains(s, "read=model.safetensors") || !strings.Contains(s, "pytorch_model.bin.index.json") {
		t.Errorf("debug log %q does not say which layout was read and which passed over", s)
	}
	files, err := WeightFiles(dir)
	if err != nil || len(files) != 1 || filepath.Base(files[0]) != "model.safetensors" {
		t.Errorf("WeightFiles: %v, %v", files, err)
	}
	files, err = WeightFiles(src)
	if err != nil || len(files) != 3 || filepath.Base(files[2]) != "pytorch_model-00002-of-00002.bin" {
		t.Errorf("WeightFiles(.bin folder): %v, %v", files, err)
	}
}

// A shard the index names that is missing, or truncated: the error names
// the shard file and tensors it should hold.
func TestLoadBinShardErrors(t *testing.T) {
	src := testenv.Shared(t, "fixtures/tiny-vicuna-bin")
	shard := "pytorch_model-00002-of-00002.bin"

	dir := copyDir(t, src, shard, "model.fp16.safetensors.ref")
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, shard)) || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), "lm_head.weight") {
		t.Errorf("missing shard: %v", err)
	}

	dir = copyDir(t, src, "model.fp16.safetensors.ref")
	p := filepath.Join(dir, shard)
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, b[:len(b)*2/3], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), "lm_head.weight") {
		t.Errorf("truncated shard: %v", err)
	}
}

// A model path that is not a local folder gets one line saying so and how
// to download one.
func TestCheckDir(t *testing.T) {
	for _, c := range []struct{ path, want string }{
		{"lmsys/vicuna-13b-v1.3", "huggingface-cli download lmsys/vicuna-13b-v1.3 --local-dir models/vicuna-13b-v1.3"},
		{filepath.Join(t.TempDir(), "nowhere"), "huggingface-cli download ORG/NAME --local-dir models/NAME"},
	} {
		_, err := Load(c.path)
		if err == nil || !strings.Contains(err.Error(), "not a local folder") || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v", c.path, err)
		}
	}
	file := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(file, []byte("{}"), 0o644)
	if err := CheckDir(file); err == nil || !strings.Contains(err.Error(), "is a file, not a folder") {
		t.Errorf("file: %v", err)
	}
	if err := CheckDir(t.TempDir()); err != nil {
		t.Errorf("folder: %v", err)
	}
	if _, err := Load(t.TempDir()); err == nil || strings.Contains(err.Error(), "not a local folder") {
		t.Errorf("empty folder: %v", err)
	}
}
