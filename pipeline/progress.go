package pipeline

import (
	"io"
	"log/slog"

	"github.com/rella-project/rella/internal/progress"
)

// newBar starts a progress task of total units on w: w itself when it is a
// *progress.Reporter (the run's, so that bars nest and share one clock),
// else a reporter that draws a bar when w is a terminal and otherwise logs a
// line (done/total, rate, ETA) to w every 30 s. Call Add or Set as work is
// done and Finish at the end.
func newBar(w io.Writer, total int, desc, unit string) *progress.Task {
	return reporterFor(w, nil).Start(progress.Spec{Name: desc, Total: total, Unit: unit})
}

// reporterFor returns w when it is a *progress.Reporter, else a reporter
// for w that logs to log (nil: text records on w, as rella's own logger
// writes them on stderr).
func reporterFor(w io.Writer, log *slog.Logger) *progress.Reporter {
	if r, ok := w.(*progress.Reporter); ok && r != nil {
		return r
	}
	if log == nil {
		if w == nil {
			w = io.Discard
		}
		log = slog.New(slog.NewTextHandler(w, nil))
	}
	return progress.For(w, log)
}
