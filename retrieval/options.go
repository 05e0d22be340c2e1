package retrieval

import (
	"errors"
	"fmt"
)

// Similarity measures between item vectors.
const (
	// SimCosine is cosine similarity between PCA-reduced item embeddings
	// (RELLA.md 4.3, the default).
	SimCosine = "cosine"
	// SimDot is the plain dot product between the raw (not reduced, not
	// normalised) item embeddings, as the released code does for some datasets.
	SimDot = "dot"
)

// Training-set kinds for instruction tuning (RELLA.md 5).
const (
	// TrainOriginal keeps only the recency-built copy of each drawn sample.
	TrainOriginal = "original"
	// TrainRetrieval keeps only the SUBR-built copy of each drawn sample.
	TrainRetrieval = "retrieval"
	// TrainMixed interleaves both copies, [orig0, aug0, orig1, aug1, ...] (ReiT).
	TrainMixed = "mixed"
)

// Options configure SUBR retrieval and the ReiT training mix. They are the
// yaml section `retrieval:`.
type Options struct {
	// Enabled selects histories by SUBR (instead of recency) for the
	// evaluated/scored split.
	Enabled bool `yaml:"enabled"`
	// Dim is the PCA dimension (512 in the paper), capped at the rank the
	// item embeddings can support (see PCA).
	Dim int `yaml:"dim"`
	// Similarity is "cosine" (after PCA, default) or "dot" (raw vectors).
	Similarity string `yaml:"similarity"`
	// BatchSize is the number of items per engine call when embedding items.
	BatchSize int `yaml:"batch_size"`
	// TrainType is "original", "retrieval" or "mixed" (ReiT: mixed).
	TrainType string `yaml:"train_type"`
	// TrainSamples is N: ReiT draws N training samples (0 = all of them).
	TrainSamples int `yaml:"train_samples"`
}

// DefaultOptions returns the defaults: retrieval off (recency histories),
// d = 512, cosine similarity, 16 items per embedding batch, original
// (recency-only) training set over all training samples. ReLLa's runs turn on
// Enabled and set TrainType to "mixed".
func DefaultOptions() Options {
	return Options{
		Enabled:      false,
		Dim:          512,
		Similarity:   SimCosine,
		BatchSize:    16,
		TrainType:    TrainOriginal,
		TrainSamples: 0,
	}
}

// Validate reports every invalid field, each error naming its dotted yaml key.
func (o Options) Validate() error {
	var errs []error
	if o.Dim <= 0 {
		errs = append(errs, fmt.Errorf("retrieval.dim: must be positive, got %d", o.Dim))
	}
	switch o.Similarity {
	case SimCosine, SimDot:
	default:
		errs = append(errs, fmt.Errorf("retrieval.similarity: must be %q or %q, got %q", SimCosine, SimDot, o.Similarity))
	}
	if o.BatchSize <= 0 {
		errs = append(errs, fmt.Errorf("retrieval.batch_size: must be positive, got %d", o.BatchSize))
	}
	switch o.TrainType {
	case TrainOriginal, TrainRetrieval, TrainMixed:
	default:
		errs = append(errs, fmt.Errorf("retrieval.train_type: must be %q, %q or %q, got %q",
			TrainOriginal, TrainRetrieval, TrainMixed, o.TrainType))
	}
	if o.TrainSamples < 0 {
		errs = append(errs, fmt.Errorf("retrieval.train_samples: must be >= 0, got %d", o.TrainSamples))
	}
	return errors.Join(errs...)
}
