package configs

import (
	"errors"
	"fmt"
)

// Baseline configures `rella baseline`: the ID-based CTR models (DeepFM,
// DCNv2, DIN, SIM, SASRec) trained with Adam on the config's splits.
type Baseline struct {
	Model           string  `yaml:"model" json:"model"`                       // deepfm | dcnv2 | din | sim | sasrec (--model overrides)
	EmbeddingSize   int     `yaml:"embedding_size" json:"embedding_size"`     // d, per ID field
	Hidden          []int   `yaml:"hidden" json:"hidden"`                     // hidden sizes of the prediction MLP
	AttentionHidden []int   `yaml:"attention_hidden" json:"attention_hidden"` // hidden sizes of DIN/SIM's attention unit
	CrossLayers     int     `yaml:"cross_layers" json:"cross_layers"`         // DCNv2's cross layers
	Blocks          int     `yaml:"blocks" json:"blocks"`                     // SASRec's self-attention blocks
	HistoryLen      int     `yaml:"history_len" json:"history_len"`           // L, the recent behaviours in the sequence (the authors' CTR data keep 30)
	RetrievalSize   int     `yaml:"retrieval_size" json:"retrieval_size"`     // SIM: behaviours retrieved from the long history
	LearningRate    float64 `yaml:"learning_rate" json:"learning_rate"`       // Adam's step size
	WeightDecay     float64 `yaml:"weight_decay" json:"weight_decay"`         // L2 on the MLP weights (not the embeddings), added to the gradient
	BatchSize       int     `yaml:"batch_size" json:"batch_size"`             // samples per step
	Epochs          int     `yaml:"epochs" json:"epochs"`                     // most epochs
	Patience        int     `yaml:"patience" json:"patience"`                 // stop after this many epochs without a better validation AUC
	TrainSamples    int     `yaml:"train_samples" json:"train_samples"`       // N-shot: N training samples drawn as the ReiT mix draws them; 0 = all
}

// BaselineModels lists the models `rella baseline` trains.
var BaselineModels = []string{"deepfm", "dcnv2", "din", "sim", "sasrec"}

// DefaultBaseline returns the settings of the presets' ML-1M runs.
func DefaultBaseline() Baseline {
	return Baseline{
		Model:           "din",
		EmbeddingSize:   16,
		Hidden:          []int{200, 80},
		AttentionHidden: []int{64, 16},
		CrossLayers:     3,
		Blocks:          1,
		HistoryLen:      30,
		RetrievalSize:   30,
		LearningRate:    1e-3,
		BatchSize:       1024,
		Epochs:          5,
		Patience:        1,
	}
}

// Validate reports every invalid setting, each naming its dotted key.
func (b Baseline) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("baseline.%s: "+format, append([]any{key}, args...)...))
	}
	if !contains(BaselineModels, b.Model) {
		bad("model", "must be one of deepfm, dcnv2, din, sim, sasrec, got %q", b.Model)
	}
	positive := func(key string, v int) {
		if v < 1 {
			bad(key, "must be at least 1, got %d", v)
		}
	}
	positive("embedding_size", b.EmbeddingSize)
	positive("history_len", b.HistoryLen)
	positive("retrieval_size", b.RetrievalSize)
	positive("batch_size", b.BatchSize)
	positive("epochs", b.Epochs)
	positive("patience", b.Patience)
	positive("blocks", b.Blocks)
	if b.CrossLayers < 0 {
		bad("cross_layers", "must not be negative, got %d", b.CrossLayers)
	}
	for _, l := range []struct {
		key string
		v   []int
	}{{"hidden", b.Hidden}, {"attention_hidden", b.AttentionHidden}} {
		if len(l.v) == 0 {
			bad(l.key, "must list at least one layer size")
		}
		for _, h := range l.v {
			if h < 1 {
				bad(l.key, "layer sizes must be at least 1, got %v", l.v)
				break
			}
		}
	}
	if !(b.LearningRate > 0) {
		bad("learning_rate", "must be positive, got %g", b.LearningRate)
	}
	if b.WeightDecay < 0 {
		bad("weight_decay", "must not be negative, got %g", b.WeightDecay)
	}
	if b.TrainSamples < 0 {
		bad("train_samples", "must not be negative (0 = all), got %d", b.TrainSamples)
	}
	return errors.Join(errs...)
}
