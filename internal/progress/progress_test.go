package progress

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"
)

// clock is a fake clock the test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) tick(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                { return &clock{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func lines(s string) []string         { return strings.Split(strings.TrimRight(s, "\n"), "\n") }
func noTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// testLogger logs text records without times into buf.
func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{ReplaceAttr: noTime}))
}

func screen(t *testing.T, out string) []string {
	t.Helper()
	s, err := Screen(out)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTerminalNestedBarLeavesNoFragments: an evaluation bar inside the
// training bar, an event line and a slog record during training leave on
// screen exactly: the event line, the log line and the final training bar;
// no row longer than the width.
func TestTerminalNestedBarLeavesNoFragments(t *testing.T) {
	var out bytes.Buffer
	c := newClock()
	r := New(Options{Terminal: true, W: &out, Now: c.now, Width: 60})
	log := r.Logger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: noTime})))
	tr := r.Start(Spec{Name: "training", Total: 10, Unit: "steps"})
	for s := 1; s <= 10; s++ {
		c.tick(time.Second)
		tr.Status("loss", Fixed(0.7/float64(s), 4), "lr", Sci(2e-4))
		tr.Set(s)
		if s == 5 {
			ev := r.Start(Spec{Name: "eval", Total: 300, Unit: "samples"})
			for i := 0; i < 300; i += 16 {
				c.tick(50 * time.Millisecond)
				ev.Add(min(16, 300-i))
			}
			ev.Finish()
			r.Event("eval step 5/10:", "auc", Fixed(0.61234, 4))
			log.Warn("disk nearly full")
		}
	}
	tr.Finish()
	got := screen(t, out.String())
	if len(got) != 3 {
		t.Fatalf("screen has %d rows, want 3:\n%s", len(got), strings.Join(got, "\n"))
	}
	if got[0] != "eval step 5/10: auc 0.6123" {
		t.Errorf("row 0 %q", got[0])
	}
	if got[1] != `level=WARN msg="disk nearly full"` {
		t.Errorf("row 1 %q", got[1])
	}
	// The final bar, cut at 59 columns.
	if got[2] != "training 100% [####################] 10/10 in 11s | loss 0." {
		t.Errorf("row 2 %q", got[2])
	}
	for _, row := range got {
		if len([]rune(row)) >= 60 {
			t.Errorf("row %q reaches the width 60", row)
		}
	}
	// Each bar is drawn from column 0 and erased after, and the eval bar was
	// really drawn (not just skipped).
	if !strings.Contains(out.String(), "\reval ") {
		t.Errorf("no eval bar drawn: %q", out.String())
	}
}

// TestTerminalThrottle: a bar is redrawn at most every 100ms of the clock.
func TestTerminalThrottle(t *testing.T) {
	var out bytes.Buffer
	c := newClock()
	r := New(Options{Terminal: true, W: &out, Now: c.now, Width: 100})
	task := r.Start(Spec{Name: "score", Total: 1000, Unit: "samples"})
	for i := 1; i <= 1000; i++ {
		c.tick(10 * time.Millisecond) // 10 s in all
		task.Set(i)
	}
	task.Finish()
	draws := strings.Count(out.String(), "\rscore")
	if draws < 95 || draws > 105 {
		t.Errorf("%d draws over 10 s of clock, want about 100", draws)
	}
	got := screen(t, out.String())
	if len(got) != 1 || !strings.HasPrefix(got[0], "score 100% [####################] 1000/1000 in 10s | 100 samples/s") {
		t.Errorf("screen %q", got)
	}
}

// TestLinesEveryInterval: off a terminal a task logs every 30 s of the
// clock with done/total, rate, elapsed and ETA, and once more when done.
func TestLinesEveryInterval(t *testing.T) {
	var buf bytes.Buffer
	c := newClock()
	r := New(Options{W: &bytes.Buffer{}, Log: testLogger(&buf), Now: c.now})
	task := r.Start(Spec{Name: "embed", Total: 100, Unit: "items"})
	for i := 1; i <= 100; i++ {
		c.tick(time.Second) // 100 s in all: lines at 30, 60, 90 s and the end
		task.Set(i)
	}
	task.Finish()
	got := lines(buf.String())
	want := []string{
		`level=INFO msg=embed done="30/100 items" pct=30% rate="1 items/s" elapsed=30s eta=1m10s`,
		`level=INFO msg=embed done="60/100 items" pct=60% rate="1 items/s" elapsed=1m00s eta=40s`,
		`level=INFO msg=embed done="90/100 items" pct=90% rate="1 items/s" elapsed=1m30s eta=10s`,
		`level=INFO msg=embed done="100/100 items" pct=100% rate="1 items/s" elapsed=1m40s`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestShortTaskSilent: off a terminal a task shorter than the interval
// logs nothing (the stage's own "done" line says enough).
func TestShortTaskSilent(t *testing.T) {
	var buf bytes.Buffer
	c := newClock()
	r := New(Options{Log: testLogger(&buf), Now: c.now})
	task := r.Start(Spec{Name: "score", Total: 10, Unit: "samples"})
	for i := 1; i <= 10; i++ {
		c.tick(time.Second)
		task.Set(i)
	}
	task.Finish()
	if buf.Len() != 0 {
		t.Errorf("short task logged %q", buf.String())
	}
}

// TestLinesEveryN: with EveryN a task logs every N units and at the end,
// whatever the clock, with its status fields.
func TestLinesEveryN(t *testing.T) {
	var buf bytes.Buffer
	c := newClock()
	r := New(Options{Log: testLogger(&buf), Now: c.now})
	task := r.Start(Spec{Name: "training", Total: 10, Done: 2, Unit: "steps", EveryN: 4})
	for s := 3; s <= 10; s++ {
		c.tick(2 * time.Second)
		task.Status("loss", Fixed(0.693147, 4))
		task.Set(s)
	}
	task.Finish()
	got := lines(buf.String())
	want := []string{
		`level=INFO msg=training done="4/10 steps" pct=40% loss=0.6931 rate="2 s/step" elapsed=4s eta=12s`,
		`level=INFO msg=training done="8/10 steps" pct=80% loss=0.6931 rate="2 s/step" elapsed=12s eta=4s`,
		`level=INFO msg=training done="10/10 steps" pct=100% loss=0.6931 rate="2 s/step" elapsed=16s`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestEvents: an event is a line above the bar on a terminal, an Info
// record off it.
func TestEvents(t *testing.T) {
	var buf bytes.Buffer
	New(Options{Log: testLogger(&buf)}).Event("trainer: evaluation", "step", "5", "auc", Fixed(0.712345, 4))
	if got := buf.String(); got != "level=INFO msg=\"trainer: evaluation\" step=5 auc=0.7123\n" {
		t.Errorf("off a terminal: %q", got)
	}
	var out bytes.Buffer
	New(Options{Terminal: true, W: &out}).Event("eval", "auc", "0.7123")
	if out.String() != "eval auc 0.7123\n" {
		t.Errorf("on a terminal: %q", out.String())
	}
	// The wrapped handler is the inner one off a terminal.
	h := slog.NewTextHandler(&buf, nil)
	if New(Options{}).Handler(h) != h {
		t.Error("Handler wrapped off a terminal")
	}
	if !New(Options{Terminal: true}).Handler(h).Enabled(context.Background(), slog.LevelInfo) {
		t.Error("wrapped handler disabled")
	}
}

// TestScreen checks the test helper itself: overwrite, erase, new rows.
func TestScreen(t *testing.T) {
	got, err := Screen("abcdef\rxy\x1b[K\nline two\n\rbar 1\rbar 22\x1b[K")
	if err != nil || strings.Join(got, "|") != "xy|line two|bar 22" {
		t.Errorf("%q %v", got, err)
	}
	if _, err := Screen("a\x1b[2J"); err == nil {
		t.Error("unknown escape accepted")
	}
}

func TestFormats(t *testing.T) {
	cases := [][2]string{
		{Fixed(0.69314718, 4), "0.6931"},
		{Fixed(math.NaN(), 4), "n/a"},
		{Sci(0.0002), "2.00e-04"},
		{Sci(0.04), "4.00e-02"},
		{Sig(1.23456), "1.235"},
		{Count(19876), "19.9k"},
		{Count(950), "950"},
		{Count(2.5e6), "2.5M"},
		{Rate(12.34, "steps"), "12.3 steps/s"},
		{Rate(0.25, "steps"), "4 s/step"},
		{Duration(850 * time.Millisecond), "850ms"},
		{Duration(39400 * time.Millisecond), "39s"},
		{Duration(185 * time.Second), "3m05s"},
		{Duration(62*time.Minute + 20*time.Second), "1h02m"},
	}
	for i, c := range cases {
		if c[0] != c[1] {
			t.Errorf("case %d: got %q, want %q", i, c[0], c[1])
		}
	}
}
