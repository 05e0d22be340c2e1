// Package progress reports the progress of long tasks (training steps,
// scoring, embedding) in the form that suits where stderr goes.
//
// On a terminal it draws one bar, redrawn in place and throttled, for the
// innermost running task; a task started while another runs (an evaluation
// during training) replaces the bar until it finishes and is then cleared
// without a trace. Lines printed meanwhile (Event, and slog records through
// Handler) clear the bar first and redraw it after, so they never share a
// row with it. Lines are cut to the terminal's width: a wrapped bar would
// leave fragments behind when redrawn.
//
// Off a terminal (batch jobs, CI, Slurm logs) there are no bars: a task logs
// a compact slog line every EveryN units when it sets EveryN, else every
// Options.Every (30 s), with done/total, rate, elapsed time and ETA.
//
// Whether the output is a terminal and the clock are inputs (Options), so
// tests drive both modes with a buffer and a fake clock.
package progress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"
)

// DefaultEvery is how often a task without EveryN logs off a terminal.
const DefaultEvery = 30 * time.Second

// redraw is the least time between two draws of a bar.
const redraw = 100 * time.Millisecond

// Options configure a Reporter.
type Options struct {
	Terminal bool         // draw bars on W; false: periodic lines on Log
	W        io.Writer    // the terminal (bars and Event lines); nil = discard
	Log      *slog.Logger // off a terminal: periodic lines and events; nil = discard
	Every    time.Duration
	Now      func() time.Time // the clock; nil = time.Now
	// Width is the terminal width in columns; 0 asks the terminal (when W
	// is one) at each draw, else assumes 80.
	Width int
}

// Reporter is shared by every task of a run; it is safe for concurrent use.
type Reporter struct {
	o     Options
	mu    sync.Mutex
	tasks []*Task // running tasks, innermost last
	drawn bool    // a bar occupies the cursor's row
	last  time.Time
}

// New returns a Reporter with o's settings.
func New(o Options) *Reporter {
	if o.W == nil {
		o.W = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Every <= 0 {
		o.Every = DefaultEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Reporter{o: o}
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && f != nil && term.IsTerminal(int(f.Fd()))
}

// For returns w itself when it is a *Reporter, else a Reporter drawing bars
// on w when w is a terminal and logging lines to log otherwise.
func For(w io.Writer, log *slog.Logger) *Reporter {
	if r, ok := w.(*Reporter); ok && r != nil {
		return r
	}
	return New(Options{Terminal: IsTerminal(w), W: w, Log: log})
}

// Terminal reports whether r draws bars.
func (r *Reporter) Terminal() bool { return r.o.Terminal }

// Write prints p as lines above the bar (on a terminal) or on W; it makes a
// Reporter usable where an io.Writer is expected.
func (r *Reporter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clear()
	n, err := r.o.W.Write(p)
	r.drawTop(true)
	return n, err
}

// Spec describes a task.
type Spec struct {
	Name  string // "training", "score", "embed"...
	Total int    // units to do
	Done  int    // units already done (a resumed run)
	Unit  string // "steps", "samples", "items"
	// EveryN, when > 0, logs a line off a terminal every EveryN units (and
	// at the end) instead of every Options.Every.
	EveryN int
}

// Task is one running task.
type Task struct {
	r      *Reporter
	s      Spec
	done   int
	status []string // key, value, key, value... (already formatted)
	start  time.Time
	base   int // done at start, for the rate
	logged time.Time
	lines  int // lines logged off a terminal
	// lastDone: the last line logged said the task was done
	lastDone bool
	ended    bool
}

// Start begins a task; call Finish when it ends (also on error).
func (r *Reporter) Start(s Spec) *Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	t := &Task{r: r, s: s, done: s.Done, start: now, base: s.Done, logged: now}
	r.tasks = append(r.tasks, t)
	if r.o.Terminal {
		r.clear()
		r.drawTop(true)
	}
	return t
}

// Status sets the task's extra fields, as key/value pairs of formatted
// numbers ("loss", "0.6931", "lr", "2.00e-04").
func (t *Task) Status(kv ...string) {
	t.r.mu.Lock()
	t.status = append(t.status[:0], kv...)
	t.r.mu.Unlock()
}

// Add records n more units done.
func (t *Task) Add(n int) {
	t.r.mu.Lock()
	d := t.done + n
	t.r.mu.Unlock()
	t.Set(d)
}

// Set records done units done: it redraws the bar (throttled) or logs a
// line when one is due.
func (t *Task) Set(done int) {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.ended {
		return
	}
	prev := t.done
	t.done = done
	now := r.o.Now()
	if r.o.Terminal {
		if r.top() == t && (done >= t.s.Total || now.Sub(r.last) >= redraw) {
			r.drawTop(false)
		}
		return
	}
	due := false
	if n := t.s.EveryN; n > 0 {
		due = done/n > prev/n || (done >= t.s.Total && prev < t.s.Total)
	} else {
		due = now.Sub(t.logged) >= r.o.Every || (done >= t.s.Total && prev < t.s.Total && t.lines > 0)
	}
	if due {
		t.logLine(now)
	}
}

// Finish ends the task. On a terminal the bar of an outermost task stays
// (with its final figures); that of a task nested in another is cleared.
// Off a terminal a task that has logged progress logs its end once, unless
// its last line already said it was done.
func (t *Task) Finish() {
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.ended {
		return
	}
	t.ended = true
	now := r.o.Now()
	top := r.top() == t
	for i, x := range r.tasks {
		if x == t {
			r.tasks = append(r.tasks[:i], r.tasks[i+1:]...)
			break
		}
	}
	if !r.o.Terminal {
		if t.lines > 0 && !t.lastDone {
			t.logLine(now)
		}
		return
	}
	if !top {
		return
	}
	r.clear()
	if len(r.tasks) == 0 {
		r.write(t.bar(now, r.width(), true) + "\n")
		return
	}
	r.drawTop(true)
}

// Event reports a short message: on a terminal a line printed above the
// bar ("msg k v k v"), else an Info record with the pairs as attributes.
func (r *Reporter) Event(msg string, kv ...string) {
	if !r.o.Terminal {
		r.o.Log.Info(msg, pairs(kv)...)
		return
	}
	var b strings.Builder
	b.WriteString(msg)
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteString(" " + kv[i] + " " + kv[i+1])
	}
	b.WriteByte('\n')
	io.WriteString(r, b.String())
}

// Handler wraps h so that, on a terminal, each record it handles first
// clears the bar and redraws it afterwards (h must write to the same
// terminal); off a terminal h is returned unchanged.
func (r *Reporter) Handler(h slog.Handler) slog.Handler {
	if !r.o.Terminal {
		return h
	}
	return &handler{r: r, h: h}
}

// Logger returns log with its handler wrapped by Handler.
func (r *Reporter) Logger(log *slog.Logger) *slog.Logger {
	if log == nil || !r.o.Terminal {
		return log
	}
	return slog.New(r.Handler(log.Handler()))
}

type handler struct {
	r *Reporter
	h slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }
func (h *handler) WithAttrs(a []slog.Attr) slog.Handler           { return &handler{h.r, h.h.WithAttrs(a)} }
func (h *handler) WithGroup(g string) slog.Handler                { return &handler{h.r, h.h.WithGroup(g)} }
func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	h.r.clear()
	err := h.h.Handle(ctx, rec)
	h.r.drawTop(true)
	return err
}

func pairs(kv []string) []any {
	a := make([]any, 0, len(kv))
	for i := 0; i+1 < len(kv); i += 2 {
		a = append(a, slog.String(kv[i], kv[i+1]))
	}
	return a
}

// logLine logs the task's progress (off a terminal); r.mu is held.
func (t *Task) logLine(now time.Time) {
	elapsed := now.Sub(t.start)
	attrs := []any{slog.String("done", fmt.Sprintf("%d/%d %s", t.done, t.s.Total, t.s.Unit))}
	if t.s.Total > 0 {
		attrs = append(attrs, slog.String("pct", fmt.Sprintf("%.0f%%", 100*float64(t.done)/float64(t.s.Total))))
	}
	attrs = append(attrs, pairs(t.status)...)
	if rate := t.rate(now); rate > 0 {
		attrs = append(attrs, slog.String("rate", Rate(rate, t.s.Unit)))
	}
	attrs = append(attrs, slog.String("elapsed", Duration(elapsed)))
	if t.done < t.s.Total {
		if eta, ok := t.eta(now); ok {
			attrs = append(attrs, slog.String("eta", Duration(eta)))
		}
	}
	t.r.o.Log.Info(t.s.Name, attrs...)
	t.logged, t.lastDone = now, t.done >= t.s.Total
	t.lines++
}

// rate is units per second since the task started.
func (t *Task) rate(now time.Time) float64 {
	sec := now.Sub(t.start).Seconds()
	if sec <= 0 || t.done <= t.base {
		return 0
	}
	return float64(t.done-t.base) / sec
}

func (t *Task) eta(now time.Time) (time.Duration, bool) {
	rate := t.rate(now)
	if rate <= 0 {
		return 0, false
	}
	return time.Duration(float64(t.s.Total-t.done) / rate * float64(time.Second)), true
}

// bar renders the task's bar line, at most width-1 columns.
func (t *Task) bar(now time.Time, width int, final bool) string {
	const cells = 20
	frac := 0.0
	if t.s.Total > 0 {
		frac = math.Min(1, float64(t.done)/float64(t.s.Total))
	}
	full := int(frac * cells)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %3.0f%% [%s%s] %d/%d", t.s.Name, 100*frac, strings.Repeat("#", full), strings.Repeat(".", cells-full), t.done, t.s.Total)
	if final || t.done >= t.s.Total {
		b.WriteString(" in " + Duration(now.Sub(t.start)))
	} else if eta, ok := t.eta(now); ok {
		b.WriteString(" ETA " + Duration(eta))
	}
	if len(t.status) > 0 {
		b.WriteString(" |")
		for i := 0; i+1 < len(t.status); i += 2 {
			b.WriteString(" " + t.status[i] + " " + t.status[i+1])
		}
	}
	if rate := t.rate(now); rate > 0 {
		b.WriteString(" | " + Rate(rate, t.s.Unit))
	}
	return cut(b.String(), width-1)
}

// cut shortens s to at most n runes.
func cut(s string, n int) string {
	if n < 1 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

func (r *Reporter) top() *Task {
	if len(r.tasks) == 0 {
		return nil
	}
	return r.tasks[len(r.tasks)-1]
}

func (r *Reporter) width() int {
	if r.o.Width > 0 {
		return r.o.Width
	}
	if f, ok := r.o.W.(*os.File); ok {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			return w
		}
	}
	return 80
}

func (r *Reporter) write(s string) { io.WriteString(r.o.W, s) }

// clear erases the bar's row (r.mu is held).
func (r *Reporter) clear() {
	if r.drawn {
		r.write("\r\x1b[K")
		r.drawn = false
	}
}

// drawTop draws the innermost task's bar on a terminal (r.mu is held).
func (r *Reporter) drawTop(force bool) {
	t := r.top()
	if !r.o.Terminal || t == nil {
		return
	}
	now := r.o.Now()
	if !force && r.drawn && now.Sub(r.last) < redraw {
		return
	}
	r.write("\r" + t.bar(now, r.width(), false) + "\x1b[K")
	r.drawn, r.last = true, now
}
