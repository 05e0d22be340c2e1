package trainer_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rella-project/rella/internal/progress"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/trainer"
)

// fakeClock is moved by a hook: 7 s per optimiser step.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func (c *fakeClock) hook() trainer.Hook {
	return trainer.Hook{Name: "clock", Priority: 0, OnStep: func(ctx context.Context, l *trainer.Loop, s trainer.StepInfo) error {
		c.t = c.t.Add(7 * time.Second)
		return nil
	}}
}

func noTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// reportRun trains setup's 9 steps (evaluations after steps 2, 4, 6, 8, 9
// with AUCs 0.612345678...) with rep, logging into logOut; each evaluation
// scores 40 samples under a nested progress task of rep, as the pipeline's
// scorer does.
func reportRun(t *testing.T, rep *progress.Reporter, logOut *syncBuffer, loggingSteps int, clock *fakeClock) {
	t.Helper()
	s := setup(t)
	s.Options.LoggingSteps = loggingSteps
	hooks, ev := scripted(map[int]float64{2: 0.612345678, 4: 0.7, 6: 0.65, 8: 0.69, 9: 0.7123456})
	if clock != nil {
		hooks = append(hooks, clock.hook())
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{ReplaceAttr: noTime}))
	_, err := runJob(t, s, t.TempDir(), func(j *trainer.Job) {
		j.Progress, j.Log, j.Hooks = rep, log, hooks
		inner := ev(j.Engine)
		j.Evaluate = func(ctx context.Context) (metrics.Result, error) {
			task := rep.Start(progress.Spec{Name: "eval", Total: 40, Unit: "samples"})
			defer task.Finish()
			for i := 0; i < 40; i += 8 {
				task.Add(8)
			}
			return inner(ctx)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTerminalShowsBarsOnly: on a terminal, with logging_steps 1, the
// screen after 9 steps and 5 evaluations holds one short line per
// evaluation, the final training bar and the closing log line: no per-step
// log lines, no fragments of the evaluation bars.
func TestTerminalShowsBarsOnly(t *testing.T) {
	var out syncBuffer // the terminal: bars and log records both go there
	rep := progress.New(progress.Options{Terminal: true, W: &out, Width: 150})
	reportRun(t, rep, &out, 1, nil)
	rows, err := progress.Screen(out.String())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"eval step 2/9 epoch 0.67 auc 0.6123 logloss 0.5000 acc 0.5000 n 10 improved yes",
		"eval step 4/9 epoch 1.33 auc 0.7000 logloss 0.5000 acc 0.5000 n 10 improved yes",
		"eval step 6/9 epoch 2.00 auc 0.6500 logloss 0.5000 acc 0.5000 n 10 improved no",
		"eval step 8/9 epoch 2.67 auc 0.6900 logloss 0.5000 acc 0.5000 n 10 improved no",
		"eval step 9/9 epoch 3.00 auc 0.7123 logloss 0.5000 acc 0.5000 n 10 improved yes",
	}
	if len(rows) != 7 {
		t.Fatalf("screen has %d rows, want 7:\n%s", len(rows), strings.Join(rows, "\n"))
	}
	for i, w := range want {
		if rows[i] != w {
			t.Errorf("row %d:\n got %q\nwant %q", i, rows[i], w)
		}
	}
	if !regexp.MustCompile(`^training 100% \[#+\] 9/9 in \S+ \| loss \d\.\d{4} lr \d\.\d\de[-+]\d\d tok/s \S+`).MatchString(rows[5]) {
		t.Errorf("final bar %q", rows[5])
	}
	if rows[6] != `level=INFO msg="trainer: done" steps=9 loss=`+rows[5][strings.Index(rows[5], "loss ")+5:][:6]+" best_auc=0.7123 best_step=9" {
		t.Errorf("last row %q", rows[6])
	}
	// The evaluation bars were drawn (and then cleared).
	if n := strings.Count(out.String(), "\reval "); n < 5 {
		t.Errorf("%d eval bar draws, want at least 5", n)
	}
}

// TestOffTerminalLines: off a terminal there are no bars; a compact line
// every logging_steps steps (and at the end), or, with logging_steps 0,
// every 30 s of the clock; each evaluation is one rounded line.
func TestOffTerminalLines(t *testing.T) {
	steps := regexp.MustCompile(`msg=training done="(\d+)/9 steps"`)
	for _, c := range []struct {
		logging int
		want    string
	}{
		{3, "[3 6 9]"},
		{1, "[1 2 3 4 5 6 7 8 9]"},
		{0, "[5 9]"}, // 7 s per step: 35 s at step 5, then the end
	} {
		t.Run(fmt.Sprint(c.logging), func(t *testing.T) {
			var out, log syncBuffer
			clock := &fakeClock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			rep := progress.New(progress.Options{W: &out, Log: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{ReplaceAttr: noTime})), Now: clock.now})
			reportRun(t, rep, &log, c.logging, clock)
			if out.String() != "" {
				t.Errorf("bars off a terminal: %q", out.String())
			}
			var at []string
			for _, m := range steps.FindAllStringSubmatch(log.String(), -1) {
				at = append(at, m[1])
			}
			if got := "[" + strings.Join(at, " ") + "]"; got != c.want {
				t.Errorf("training lines at steps %s, want %s:\n%s", got, c.want, log.String())
			}
			line := regexp.MustCompile(`(?m)^level=INFO msg=training done="\d/9 steps" pct=\d+% epoch=\d\.\d\d loss=\d\.\d{4} lr=\d\.\d\de[-+]\d\d grad_norm=\S+ tok/s=\S+ rate="[^"]+" elapsed=\S+( eta=\S+)?$`)
			if n := len(line.FindAllString(log.String(), -1)); n != len(at) {
				t.Errorf("%d of %d training lines have the compact rounded form:\n%s", n, len(at), log.String())
			}
			if !strings.Contains(log.String(), `level=INFO msg="trainer: evaluation" step=2/9 epoch=0.67 auc=0.6123 logloss=0.5000 acc=0.5000 n=10 improved=yes`+"\n") {
				t.Errorf("no rounded evaluation line:\n%s", log.String())
			}
			if strings.Count(log.String(), "trainer: evaluation") != 5 || strings.Contains(log.String(), "msg=eval ") {
				t.Errorf("want 5 evaluation lines and no lines for the short evaluation scoring:\n%s", log.String())
			}
		})
	}
}
