package data

import (
	"context"
	"fmt"
	"log/slog"
)

// Load reads the original files of opts.Dataset under opts.Dir and builds its
// CTR samples as RELLA.md section 1 describes. Malformed lines stop the load
// with an error naming the file and line, unless opts.SkipMalformed, when the
// Report counts them. Ratings naming unknown users or items are dropped and
// counted in the Report.
func Load(ctx context.Context, opts Options, log *slog.Logger) (*Dataset, *Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, nil, fmt.Errorf("data: invalid options: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		ds  *Dataset
		rep *Report
		err error
	)
	switch opts.Dataset {
	case ML1M:
		ds, rep, err = loadML1M(ctx, opts, log)
	case ML25M:
		ds, rep, err = loadML25M(ctx, opts, log)
	case BookCrossing:
		ds, rep, err = loadBookCrossing(ctx, opts, log)
	default:
		return nil, nil, fmt.Errorf("data: dataset %q: not implemented yet", opts.Dataset)
	}
	if err != nil {
		return nil, nil, err
	}
	rep.UsersKept = len(ds.Users)
	rep.ItemsKept = len(ds.Items)
	rep.Stats = ds.Stats()
	for _, n := range rep.Notes {
		log.Info("data: " + n)
	}
	rep.warn(log)
	log.Info("data: loaded", "dataset", opts.Dataset, "train", rep.Stats.Train, "valid", rep.Stats.Valid,
		"test", rep.Stats.Test, "users", rep.Stats.Users, "items", rep.Stats.Items,
		"unknown_users", rep.UnknownUsers, "unknown_items", rep.UnknownItems)
	return ds, rep, nil
}

// Stats counts a Dataset's samples, users and items.
type Stats struct {
	Train int `json:"train"`
	Valid int `json:"valid"`
	Test  int `json:"test"`
	Users int `json:"users"`
	Items int `json:"items"`
}

// Stats returns the Dataset's counts.
func (d *Dataset) Stats() Stats {
	return Stats{Train: len(d.Train), Valid: len(d.Valid), Test: len(d.Test), Users: len(d.Users), Items: len(d.Items)}
}

// Split returns the split called name: "train", "valid" or "test".
func (d *Dataset) Split(name string) ([]Sample, error) {
	switch name {
	case "train":
		return d.Train, nil
	case "valid":
		return d.Valid, nil
	case "test":
		return d.Test, nil
	}
	return nil, fmt.Errorf("data: unknown split %q (want train, valid or test)", name)
}

// Target returns the event a sample predicts.
func (d *Dataset) Target(s Sample) Event { return d.Seqs[s.User][s.Pos] }

// History returns the events before a sample's target, oldest first. The
// slice shares the Dataset's memory: do not modify it.
func (d *Dataset) History(s Sample) []Event { return d.Seqs[s.User][:s.Pos:s.Pos] }

// Limit returns the first MaxEvalSamples samples of s (all when it is 0).
func (o Options) Limit(s []Sample) []Sample {
	if o.MaxEvalSamples > 0 && len(s) > o.MaxEvalSamples {
		return s[:o.MaxEvalSamples]
	}
	return s
}
