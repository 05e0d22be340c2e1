package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/rella-project/rella/internal/atomicfile"
	"github.com/rella-project/rella/metrics"
)

// Summary collects the results a run produced, one row per variant.
type Summary struct {
	Rows []Result
}

// Summary files Run writes into the output folder.
const (
	SummaryMarkdown = "summary.md"
	SummaryJSON     = "summary.json"
)

// Table renders the summary for a person: a row per variant with its
// split, sample count, K, AUC (n/a when the samples have one label), log
// loss and accuracy.
func (s *Summary) Table() string {
	if len(s.Rows) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %-6s %7s %4s %8s %8s %8s\n", "variant", "split", "n", "K", "auc", "logloss", "acc")
	for _, r := range s.Rows {
		m := r.Metrics
		fmt.Fprintf(&b, "%-34s %-6s %7d %4d %s %s %s\n", r.Name(), r.Variant.Split, m.N, r.K,
			fmtMetric(m.AUC, 8), fmtMetric(m.LogLoss, 8), fmtMetric(m.Accuracy, 8))
	}
	return b.String()
}

// Markdown renders the summary as a Markdown table, with the folder of
// each row's metrics.json and predictions.jsonl.
func (s *Summary) Markdown(outputDir string) string {
	var b strings.Builder
	b.WriteString("| variant | split | n | K | AUC | log loss | accuracy | results |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range s.Rows {
		m := r.Metrics
		dir := r.Dir
		if rel, err := filepath.Rel(outputDir, r.Dir); err == nil {
			dir = rel
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %s | %s | `%s` |\n", r.Name(), r.Variant.Split, m.N, r.K,
			strings.TrimSpace(fmtMetric(m.AUC, 0)), strings.TrimSpace(fmtMetric(m.LogLoss, 0)), strings.TrimSpace(fmtMetric(m.Accuracy, 0)), filepath.ToSlash(dir))
	}
	return b.String()
}

// summaryRow is one row of summary.json.
type summaryRow struct {
	Variant string         `json:"variant"`
	Stage   string         `json:"stage"`
	Split   string         `json:"split"`
	History string         `json:"history"`
	Adapter string         `json:"adapter,omitempty"`
	K       int            `json:"k"`
	Dir     string         `json:"dir"`
	Reused  bool           `json:"reused"`
	Metrics metrics.Result `json:"metrics"` // auc is null when undefined
}

// Write writes the summary to OUTPUT_DIR/summary.md and summary.json.
func (s *Summary) Write(outputDir string) error {
	rows := make([]summaryRow, len(s.Rows))
	for i, r := range s.Rows {
		rows[i] = summaryRow{Variant: r.Name(), Stage: r.Variant.Stage, Split: r.Variant.Split, History: r.Variant.History,
			Adapter: r.Variant.Adapter, K: r.K, Dir: r.Dir, Reused: r.Reused, Metrics: r.Metrics}
	}
	if err := writeJSON(filepath.Join(outputDir, SummaryJSON), map[string]any{"rows": rows}); err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(outputDir, SummaryMarkdown), []byte(s.Markdown(outputDir))); err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	return nil
}

// Run executes the config's stages in order and writes the summary to
// OUTPUT_DIR/summary.{md,json}. With resume, a stage whose results are in
// the output folder with the fingerprint of the current settings is not
// run again (a result made with other settings is recomputed, and the log
// says which settings differ), and training continues from its newest
// complete checkpoint.
func (r *Runner) Run(ctx context.Context, resume bool) (*Summary, error) {
	c := r.Cfg
	sum := &Summary{}
	ds, err := r.Prepare(ctx)
	if err != nil {
		return nil, err
	}
	for _, stage := range c.Stages {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		switch stage {
		case "prepare":
			// done above: every stage needs the samples
		case "embed":
			if _, err := r.Embed(ctx, ds); err != nil {
				return sum, err
			}
		case "retrieve":
			if err := r.Retrieve(ctx, ds); err != nil {
				return sum, err
			}
		case "score":
			res, err := r.Score(ctx, ds, c.Evaluation.Split, resume)
			if err != nil {
				return sum, err
			}
			sum.Rows = append(sum.Rows, res...)
		case "train":
			res, err := r.Train(ctx, ds, resume)
			if err != nil {
				return sum, err
			}
			sum.Rows = append(sum.Rows, res...)
		default:
			return sum, fmt.Errorf("stages: unknown stage %q", stage)
		}
	}
	if len(sum.Rows) > 0 {
		if err := sum.Write(c.OutputDir); err != nil {
			return sum, err
		}
	}
	return sum, nil
}
