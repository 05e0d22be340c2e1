package data

import (
	"errors"
	"fmt"
)

// Options choose the dataset and how its CTR samples are built. They are the
// `data:` section of a run's YAML configuration.
type Options struct {
	Dataset           Kind   `yaml:"dataset"`             // ml-1m | ml-25m | bookcrossing
	Dir               string `yaml:"dir"`                 // folder holding the dataset's original files
	HistoryLen        int    `yaml:"history_len"`         // K, the number of history items in a prompt
	MinHistory        int    `yaml:"min_history"`         // 5: samples need at least this many history items (BookCrossing: users need more ratings than this)
	MaxEvalSamples    int    `yaml:"max_eval_samples"`    // 0 = all; scoring/evaluation use the first N of a split
	SkipMalformed     bool   `yaml:"skip_malformed"`      // count and skip malformed lines instead of failing
	ML25MTrainSamples int    `yaml:"ml25m_train_samples"` // 90000; 0 keeps the whole train split
	ML25MTestSamples  int    `yaml:"ml25m_test_samples"`  // 70000; 0 keeps the whole test split
	SampleSeed        int64  `yaml:"sample_seed"`         // 42: the authors' seed for their draws
	// IDOrder orders same-second MovieLens ratings by user id, then item id:
	// "string" (lexicographic, as the authors' ML-1M code, which kept the ids
	// as strings), "numeric" (as their ML-25M code, where pandas read the ids
	// as numbers), or "auto" (or empty): the authors' choice for the dataset.
	IDOrder string `yaml:"id_order"`
}

// The values of Options.IDOrder.
const (
	IDOrderAuto    = "auto"
	IDOrderString  = "string"
	IDOrderNumeric = "numeric"
)

// idOrder resolves IDOrderAuto to the authors' choice for the dataset.
func (o Options) idOrder() string {
	switch o.IDOrder {
	case IDOrderString, IDOrderNumeric:
		return o.IDOrder
	}
	if o.Dataset == ML25M {
		return IDOrderNumeric
	}
	return IDOrderString
}

// DefaultOptions returns the settings of the paper's ML-1M runs.
func DefaultOptions() Options {
	return Options{
		Dataset:           ML1M,
		Dir:               "../shared/data/ml-1m",
		HistoryLen:        30,
		MinHistory:        5,
		MaxEvalSamples:    0,
		SkipMalformed:     false,
		ML25MTrainSamples: 90000,
		ML25MTestSamples:  70000,
		SampleSeed:        42,
		IDOrder:           IDOrderAuto,
	}
}

// Validate reports every invalid setting, each naming its dotted key.
func (o Options) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("data.%s: "+format, append([]any{key}, args...)...))
	}
	switch o.Dataset {
	case ML1M, ML25M, BookCrossing:
	default:
		bad("dataset", "must be %q, %q or %q, got %q", ML1M, ML25M, BookCrossing, o.Dataset)
	}
	if o.Dir == "" {
		bad("dir", "must name the folder holding the dataset's files")
	}
	if o.HistoryLen < 1 {
		bad("history_len", "must be at least 1, got %d", o.HistoryLen)
	}
	if o.MinHistory < 0 {
		bad("min_history", "must not be negative, got %d", o.MinHistory)
	}
	if o.MaxEvalSamples < 0 {
		bad("max_eval_samples", "must not be negative (0 = all), got %d", o.MaxEvalSamples)
	}
	if o.ML25MTrainSamples < 0 {
		bad("ml25m_train_samples", "must not be negative, got %d", o.ML25MTrainSamples)
	}
	if o.ML25MTestSamples < 0 {
		bad("ml25m_test_samples", "must not be negative, got %d", o.ML25MTestSamples)
	}
	if o.SampleSeed < 0 || o.SampleSeed > 1<<32-1 {
		// numpy's RandomState takes seeds in [0, 2**32).
		bad("sample_seed", "must be between 0 and 4294967295, got %d", o.SampleSeed)
	}
	switch o.IDOrder {
	case "", IDOrderAuto, IDOrderString, IDOrderNumeric:
	default:
		bad("id_order", "must be %q, %q or %q, got %q", IDOrderAuto, IDOrderString, IDOrderNumeric, o.IDOrder)
	}
	return errors.Join(errs...)
}
