package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/rella-project/rella/internal/atomicfile"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/safetensors"
)

// convertCommand rewrites a checkpoint's weights as safetensors.
func convertCommand() command {
	return command{
		name:    "convert",
		summary: "write a model folder's weights (PyTorch .bin or safetensors) as sharded safetensors in a new folder",
		usage:   "rella convert --model DIR --out DIR [--max-shard-size 5GB]",
		examples: []string{
			"rella convert --model models/vicuna-13b-v1.3 --out models/vicuna-13b-v1.3-st",
			"rella convert --model models/vicuna-7b-v1.5 --out /scratch/vicuna-7b --max-shard-size 2GB",
		},
		run: runConvert,
	}
}

func runConvert(ctx context.Context, e *env, args []string) error {
	fs := newFlags("convert")
	dir := fs.String("model", "", "model folder to read (config.json + .bin or safetensors weights)")
	out := fs.String("out", "", "folder to create (must not exist or be empty)")
	shardFlag := fs.String("max-shard-size", "5GB", "largest shard, as HF spells it: 5GB, 500MB, 2GiB or a byte count")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected argument %q", rest[0])
	}
	if *dir == "" || *out == "" {
		return usageErrorf("--model and --out are required")
	}
	maxShard, err := parseByteSize(*shardFlag)
	if err != nil {
		return usageErrorf("--max-shard-size: %v", err)
	}
	if ents, err := os.ReadDir(*out); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s already exists and is not empty; choose a new folder", *out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	m, err := model.LoadLogged(*dir, e.log)
	if err != nil {
		return err
	}
	defer m.Close()

	parent := filepath.Dir(filepath.Clean(*out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, ".rella-convert-*")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	shards, total, err := writeShards(ctx, e.log, m, tmp, maxShard)
	if err != nil {
		return err
	}
	if err := copyCompanions(*dir, tmp); err != nil {
		return err
	}
	if err := verifyConverted(ctx, m, tmp); err != nil {
		return err
	}
	// The folder is shared like a downloaded one: readable by all.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	written, err := os.ReadDir(tmp)
	if err != nil {
		return err
	}
	for _, ent := range written {
		if err := os.Chmod(filepath.Join(tmp, ent.Name()), 0o644); err != nil {
			return err
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	if err := os.Remove(*out); err != nil && !errors.Is(err, os.ErrNotExist) { // an empty folder
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	done = true
	if err := atomicfile.SyncDir(parent); err != nil {
		return err
	}
	e.log.Info("convert: safetensors written", "from", *dir, "format", m.Format, "out", *out, "shards", shards, "bytes", total)
	fmt.Fprintln(e.stdout, *out)
	return nil
}

// convertNames returns the tensors to write, in model order (layers by
// number). A tied checkpoint's lm_head.weight, which only repeats the
// embeddings and which Load ignores, is left out as HF does.
func convertNames(m *model.Model) []string {
	var names []string
	for _, n := range m.Names() {
		if n == "lm_head.weight" && m.Config.TieWordEmbeddings {
			continue
		}
		names = append(names, n)
	}
	rank := func(n string) int {
		switch {
		case strings.HasPrefix(n, "model.embed_tokens."):
			return 0
		case strings.HasPrefix(n, "lm_head."):
			return 2
		}
		return 1
	}
	sort.SliceStable(names, func(i, j int) bool {
		if ri, rj := rank(names[i]), rank(names[j]); ri != rj {
			return ri < rj
		}
		return naturalLess(names[i], names[j])
	})
	return names
}

// naturalLess orders dotted names comparing numeric parts as numbers.
func naturalLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for k := 0; k < len(pa) && k < len(pb); k++ {
		if pa[k] == pb[k] {
			continue
		}
		x, errx := strconv.Atoi(pa[k])
		y, erry := strconv.Atoi(pb[k])
		if errx == nil && erry == nil {
			return x < y
		}
		return pa[k] < pb[k]
	}
	return len(pa) < len(pb)
}

// writeShards writes the tensors into dir as HF does: model.safetensors
// when they fit one shard, else model-0000i-of-0000n.safetensors and
// model.safetensors.index.json. The tensors' bytes are written straight
// from the source mapping.
func writeShards(ctx context.Context, log *slog.Logger, m *model.Model, dir string, maxShard int64) (int, int64, error) {
	var shards [][]safetensors.Tensor
	var cur []safetensors.Tensor
	var curSize, total int64
	for _, n := range convertNames(m) {
		dtype, shape, b, err := m.Raw(n)
		if err != nil {
			return 0, 0, err
		}
		if len(cur) > 0 && curSize+int64(len(b)) > maxShard {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, safetensors.Tensor{Name: n, DType: dtype, Shape: shape, Data: b})
		curSize += int64(len(b))
		total += int64(len(b))
	}
	if len(cur) > 0 {
		shards = append(shards, cur)
	}
	meta := map[string]string{"format": "pt"}
	if len(shards) == 1 {
		if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), shards[0], meta); err != nil {
			return 0, 0, err
		}
		return 1, total, nil
	}
	weightMap := map[string]string{}
	for i, sh := range shards {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		if err := safetensors.Write(filepath.Join(dir, name), sh, meta); err != nil {
			return 0, 0, err
		}
		log.Info("convert: shard written", "file", name, "tensors", len(sh))
		for _, t := range sh {
			weightMap[t.Name] = name
		}
	}
	idx := map[string]any{"metadata": map[string]int64{"total_size": total}, "weight_map": weightMap}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return 0, 0, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), append(b, '\n')); err != nil {
		return 0, 0, err
	}
	return len(shards), total, nil
}

// isWeightFile reports whether name is a weights file or index of either
// format (which convert writes itself rather than copying).
func isWeightFile(name string) bool {
	return strings.HasSuffix(name, ".bin") || strings.HasSuffix(name, ".bin.index.json") ||
		strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".safetensors.index.json") ||
		strings.HasSuffix(name, ".safetensors.ref") || strings.HasSuffix(name, ".pt") || strings.HasSuffix(name, ".pth")
}

// copyCompanions copies the folder's other files (config.json, tokenizer,
// generation config, ...) beside the new weights.
func copyCompanions(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		name := ent.Name()
		if !ent.Type().IsRegular() || strings.HasPrefix(name, ".") || isWeightFile(name) {
			continue
		}
		in, err := os.Open(filepath.Join(src, name))
		if err != nil {
			return err
		}
		err = atomicfile.Write(filepath.Join(dst, name), func(w io.Writer) error {
			_, err := io.Copy(w, in)
			return err
		})
		in.Close()
		if err != nil {
			return fmt.Errorf("copy %s: %w", name, err)
		}
	}
	return nil
}

// verifyConverted reopens the written folder and checks every tensor's
// dtype, shape and bytes against the source.
func verifyConverted(ctx context.Context, m *model.Model, dir string) error {
	got, err := model.Load(dir)
	if err != nil {
		return fmt.Errorf("the written folder does not load: %w", err)
	}
	defer got.Close()
	for _, n := range convertNames(m) {
		if err := ctx.Err(); err != nil {
			return err
		}
		dt1, sh1, b1, err := m.Raw(n)
		if err != nil {
			return err
		}
		dt2, sh2, b2, err := got.Raw(n)
		if err != nil {
			return fmt.Errorf("written folder: %w", err)
		}
		if dt1 != dt2 || fmt.Sprint(sh1) != fmt.Sprint(sh2) || !bytes.Equal(b1, b2) {
			return fmt.Errorf("tensor %q reads back as %s %v, differing from the source's %s %v", n, dt2, sh2, dt1, sh1)
		}
	}
	return nil
}

// parseByteSize reads a size such as 5GB (10^9), 2GiB (2^30) or 1000000.
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if len(t) > len(u.suffix) && strings.EqualFold(t[len(t)-len(u.suffix):], u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a positive size such as 5GB, 500MB or 2GiB", s)
	}
	return int64(v * float64(mult)), nil
}
