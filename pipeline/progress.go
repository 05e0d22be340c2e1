package pipeline

import (
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newBar returns a progress bar on w showing rate and ETA, or a silent one
// when w is not a terminal (logs and CI stay clean).
func newBar(w io.Writer, total int, desc, unit string) *progressbar.ProgressBar {
	f, ok := w.(*os.File)
	if w == nil || !ok || !term.IsTerminal(int(f.Fd())) {
		return progressbar.DefaultSilent(int64(total), desc)
	}
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
	)
}
