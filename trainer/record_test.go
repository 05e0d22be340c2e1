package trainer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/safetensors"
	"github.com/rella-project/rella/trainer"
	"github.com/rella-project/rella/trainer/trainertest"
)

// checkBatches fails t unless dir's batches.json holds s's training examples
// and, step by step, exactly the micro-batches of calls (the engine's
// LossGrad calls, in order), wantSteps steps of accum micro-batches each.
func checkBatches(t *testing.T, dir string, s trainertest.Setup, calls []call, wantSteps, accum int) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, trainer.BatchesFile))
	if err != nil {
		t.Fatal(err)
	}
	// Decode generically, as scripts/hf_peft.py does.
	var b struct {
		Examples []struct {
			Tokens []int `json:"tokens"`
			Labels []int `json:"labels"`
		} `json:"examples"`
		Steps      [][][]int `json:"steps"`
		TotalSteps int       `json:"total_steps"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("%s: %v", trainer.BatchesFile, err)
	}
	if len(b.Examples) != len(s.Train) {
		t.Fatalf("%d examples, want %d", len(b.Examples), len(s.Train))
	}
	for i, e := range b.Examples {
		if !slices.Equal(e.Tokens, s.Train[i].Tokens) || !slices.Equal(e.Labels, s.Train[i].Labels) {
			t.Fatalf("example %d: %v / %v, want %v", i, e.Tokens, e.Labels, s.Train[i])
		}
	}
	if len(b.Steps) != wantSteps {
		t.Fatalf("%d steps, want %d", len(b.Steps), wantSteps)
	}
	i := 0
	for st, micros := range b.Steps {
		if len(micros) != accum {
			t.Fatalf("step %d: %d micro-batches, want %d", st+1, len(micros), accum)
		}
		for k, mb := range micros {
			var ex []engine.Example
			for _, x := range mb {
				if x < 0 || x >= len(s.Train) {
					t.Fatalf("step %d micro-batch %d: index %d out of range", st+1, k, x)
				}
				ex = append(ex, s.Train[x])
			}
			if i >= len(calls) {
				t.Fatalf("step %d micro-batch %d: beyond the engine's %d calls", st+1, k, len(calls))
			}
			if got := fmt.Sprint(ex); got != calls[i].batch {
				t.Fatalf("step %d micro-batch %d: file %s, engine saw %s", st+1, k, got, calls[i].batch)
			}
			i++
		}
	}
	if i != len(calls) {
		t.Fatalf("file lists %d micro-batches, the engine saw %d", i, len(calls))
	}
}

// checkLoRAInit fails t unless path holds want's tensors bit for bit (F32,
// same names and shapes).
func checkLoRAInit(t *testing.T, path string, want []*engine.Param) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for _, p := range want {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if !slices.Equal(f.Names(), names) {
		t.Fatalf("%s: tensors %v, want %v", path, f.Names(), names)
	}
	for _, p := range want {
		info, _ := f.Info(p.Name)
		if info.DType != "F32" || !slices.Equal(info.Shape, p.Shape) {
			t.Fatalf("%s: %s: %s %v, want F32 %v", path, p.Name, info.DType, info.Shape, p.Shape)
		}
		v, err := f.Float32s(p.Name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range v {
			if math.Float32bits(v[i]) != math.Float32bits(p.Value[i]) {
				t.Fatalf("%s: %s[%d] = %v, want %v", path, p.Name, i, v[i], p.Value[i])
			}
		}
	}
}

// TestRecordBatches: with training.record_batches, batches.json lists
// exactly the micro-batches the engine was given, in order, and
// lora_init.safetensors is the engine's starting adapter; a run interrupted
// twice (in step 1's window, before any update, and in epoch 1) and resumed
// leaves byte-identical files; after early stopping the file covers the
// steps run; without the option neither file appears.
func TestRecordBatches(t *testing.T) {
	s := setup(t)
	s.Options.RecordBatches = true
	plan, _ := s.Options.Plan(len(s.Train))
	initial := s.NewEngine(t).Params()
	root := t.TempDir()

	calls := recording(&s)
	a := trainertest.Train(t, s, filepath.Join(root, "straight"))
	checkBatches(t, a.Dir, s, *calls, plan.TotalSteps, plan.Accum)
	checkLoRAInit(t, filepath.Join(a.Dir, trainer.LoRAInitFile), initial)

	calls = recording(&s)
	b := trainertest.Train(t, s, filepath.Join(root, "interrupted"), trainertest.Cut{MicroBatches: 2}, trainertest.Cut{MicroBatches: 14})
	trainertest.Compare(t, a, b)
	checkBatches(t, b.Dir, s, *calls, plan.TotalSteps, plan.Accum)
	for _, f := range []string{trainer.BatchesFile, trainer.LoRAInitFile} {
		x, _ := os.ReadFile(filepath.Join(a.Dir, f))
		y, err := os.ReadFile(filepath.Join(b.Dir, f))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between the uninterrupted and the interrupted run (%v)", f, err)
		}
	}

	// Early stopping after step 8 (see TestEarlyStoppingSurvivesResume).
	es := setup(t)
	es.Options.RecordBatches = true
	es.Options.EarlyStoppingPatience = 2
	es.Options.SaveSteps = 0
	es.Hooks, es.Evaluate = scripted(map[int]float64{2: 0.6, 4: 0.7, 6: 0.65, 8: 0.69, 9: 0.9})
	calls = recording(&es)
	c := trainertest.Train(t, es, filepath.Join(root, "early"), trainertest.Cut{MicroBatches: 25})
	if c.Summary.Steps != 8 {
		t.Fatalf("early-stopped run: %d steps, want 8", c.Summary.Steps)
	}
	checkBatches(t, c.Dir, es, *calls, 8, plan.Accum)

	s.Options.RecordBatches = false
	off := trainertest.Train(t, s, filepath.Join(root, "off"), trainertest.Cut{MicroBatches: 5})
	for _, f := range []string{trainer.BatchesFile, trainer.LoRAInitFile} {
		if _, err := os.Stat(filepath.Join(off.Dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("record_batches off: %s exists (%v)", f, err)
		}
	}
}

// TestRecordBatchesNotRunDefining: switching record_batches on for a resume
// is not a change of run; resuming after step 0 writes batches.json but
// cannot know the starting adapter, and says so.
func TestRecordBatchesNotRunDefining(t *testing.T) {
	s := setup(t)
	s.Options.MaxSteps = 2
	dir := t.TempDir()
	if _, err := runJob(t, s, dir, nil); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	sum, err := runJob(t, s, dir, func(j *trainer.Job) {
		j.Options.RecordBatches = true
		j.Options.ResumeFromCheckpoint = "auto"
		j.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	if err != nil {
		t.Fatalf("resuming with record_batches on: %v", err)
	}
	if sum.ResumedFrom == "" || sum.Steps != 2 {
		t.Errorf("summary %+v, want a resumed run of 2 steps", *sum)
	}
	if _, err := os.Stat(filepath.Join(dir, trainer.BatchesFile)); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, trainer.LoRAInitFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s written after step 0 (%v)", trainer.LoRAInitFile, err)
	}
	if !strings.Contains(logs.String(), trainer.LoRAInitFile) {
		t.Errorf("no warning about the missing %s in %q", trainer.LoRAInitFile, logs.String())
	}
}
