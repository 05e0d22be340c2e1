package baseline

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/rella-project/rella/internal/atomicfile"
	"github.com/rella-project/rella/safetensors"
)

// Files of a saved model.
const (
	ModelFile = "model.safetensors" // every parameter (F32) and, in the metadata, the model, its config and best epoch
	VocabFile = "vocab.json"        // each field's values in index order ("" = out of vocabulary)
)

// Save writes the model's parameters to dir/model.safetensors and its
// vocabularies to dir/vocab.json, atomically.
func (m *Model) Save(dir string) error {
	var ts []safetensors.Tensor
	for _, q := range m.Params.List() {
		ts = append(ts, safetensors.F32(q.Name, []int(q.Value.Shape()), q.float32s()))
	}
	cfg, err := json.Marshal(m.Config)
	if err != nil {
		return fmt.Errorf("baseline: save: %w", err)
	}
	meta := map[string]string{
		"model":         m.Name,
		"dataset":       string(m.Features.Kind),
		"config":        string(cfg),
		"best_epoch":    strconv.Itoa(m.BestEpoch),
		"train_samples": strconv.Itoa(m.Trained),
	}
	if err := safetensors.Write(filepath.Join(dir, ModelFile), ts, meta); err != nil {
		return fmt.Errorf("baseline: save %s: %w", filepath.Join(dir, ModelFile), err)
	}
	vocab := map[string][]string{"rating": m.Features.Ratings.Values()}
	for _, v := range m.Features.UserVocabs {
		vocab["user."+v.Name] = v.Values()
	}
	for _, v := range m.Features.ItemVocabs {
		vocab["item."+v.Name] = v.Values()
	}
	b, err := json.Marshal(vocab)
	if err != nil {
		return fmt.Errorf("baseline: save: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, VocabFile), append(b, '\n')); err != nil {
		return fmt.Errorf("baseline: save %s: %w", filepath.Join(dir, VocabFile), err)
	}
	return nil
}
