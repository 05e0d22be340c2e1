package main

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/safetensors"
)

// gradsFixture is a tiny random model, a batch file in hf_peft.py's format
// and a starting adapter with non-zero A and B.
type gradsFixture struct {
	dir, modelDir, batchPath, initPath string
	batch                              []engine.Example
	init                               []*engine.Param // the adapter as written (Grad allocated)
	scale                              float64
}

const gradsVocab = 96

// gradsTargets is the adapter the test uses: rank 4, alpha 8 (scale 2), three modules.
var gradsTargets = lora.Options{R: 4, Alpha: 8, TargetModules: []string{"q_proj", "v_proj", "down_proj"}}

func newGradsFixture(t *testing.T) *gradsFixture {
	t.Helper()
	f := &gradsFixture{dir: t.TempDir(), scale: gradsTargets.Scale()}
	f.modelDir = filepath.Join(f.dir, "model")
	if err := model.Init(f.modelDir, model.InitOptions{Hidden: 32, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 48,
		Vocab: gradsVocab, Seed: 5, Std: 0.2}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	// hf_peft.py make-data's layout: BOS, random ids, the last positions
	// labelled with the next token (rella's convention), none at the end;
	// the third example also has an isolated label in the middle.
	var exs []map[string][]int
	for i, n := range []int{7, 12, 9} {
		toks := []int{1}
		for len(toks) < n {
			toks = append(toks, 3+rng.IntN(gradsVocab-3))
		}
		labs := make([]int, n)
		for t := range labs {
			labs[t] = engine.IgnoreIndex
		}
		for t := max(0, n-1-3); t < n-1; t++ {
			labs[t] = toks[t+1]
		}
		if i == 2 {
			labs[2] = toks[3]
		}
		exs = append(exs, map[string][]int{"tokens": toks, "labels": labs})
		f.batch = append(f.batch, engine.Example{Tokens: toks, Labels: labs})
	}
	// Extra keys as make-data writes them (a curve's "steps") are ignored.
	b, err := json.Marshal(map[string]any{"examples": exs, "seed": 1, "steps": [][][]int{{{0, 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	f.batchPath = writeFile(t, filepath.Join(f.dir, "batch.json"), string(b))

	m, err := model.Load(f.modelDir)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	m.Close()
	tg, err := lora.Targets(gradsTargets, c.NumHiddenLayers, c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.IntermediateSize)
	if err != nil {
		t.Fatal(err)
	}
	f.init = lora.Init(gradsTargets, tg, 1)
	var ts []safetensors.Tensor
	for _, p := range f.init {
		for i := range p.Value {
			p.Value[i] = float32(0.3 * rng.NormFloat64()) // B non-zero: every path has a gradient
		}
		ts = append(ts, safetensors.F32(p.Name, p.Shape, p.Value))
	}
	f.initPath = filepath.Join(f.dir, "lora_init.safetensors")
	if err := safetensors.Write(f.initPath, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *gradsFixture) args(out string, extra ...string) []string {
	return append([]string{"grads", "--model", f.modelDir, "--batch", f.batchPath, "--lora-init", f.initPath,
		"--out", out, "--r", "4", "--alpha", "8", "--targets", "q_proj,v_proj,down_proj"}, extra...)
}

// `rella grads` on cpu float64 writes the gradient of the summed loss:
// checked against central finite differences of the loss, and the loss
// against one computed from the inference path's logits.
func TestGradsCommandFiniteDifferences(t *testing.T) {
	f := newGradsFixture(t)
	out := filepath.Join(f.dir, "out")
	code, stdout, stderr := rella(t, f.args(out, "--device", "cpu", "--dtype", "float64")...)
	if code != 0 {
		t.Fatalf("grads: exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(stdout, "CHECK go_grads_cpu_float64 ") {
		t.Errorf("stdout %q", stdout)
	}
	var res struct {
		LossSum  float64 `json:"loss_sum"`
		Tokens   int     `json:"tokens"`
		LossMean float64 `json:"loss_mean"`
	}
	b, err := os.ReadFile(filepath.Join(out, "loss.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	labelled := 0
	for _, x := range f.batch {
		for _, l := range x.Labels {
			if l != engine.IgnoreIndex {
				labelled++
			}
		}
	}
	if res.Tokens != labelled || math.Abs(res.LossMean-res.LossSum/float64(labelled)) > 1e-12*res.LossSum {
		t.Fatalf("loss.json %+v, want tokens %d and mean = sum/tokens", res, labelled)
	}

	gf, err := safetensors.Open(filepath.Join(out, "grads.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	var names []string
	for _, p := range f.init {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if !slices.Equal(gf.Names(), names) {
		t.Fatalf("gradient names %v, want the init file's %v", gf.Names(), names)
	}
	grads := map[string][]float32{}
	for _, p := range f.init {
		info, _ := gf.Info(p.Name)
		if info.DType != safetensors.DTypeF32 || !slices.Equal(info.Shape, p.Shape) {
			t.Fatalf("tensor %s: %s %v, want F32 %v", p.Name, info.DType, info.Shape, p.Shape)
		}
		if grads[p.Name], err = gf.Float32s(p.Name); err != nil {
			t.Fatal(err)
		}
	}

	// An engine of our own on the same adapter, for loss evaluations.
	m, err := model.Load(f.modelDir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	eng, err := cpu.New(m, cpu.Options{DType: "float64", LoRA: &cpu.LoRA{Scale: f.scale, Params: f.init}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ctx := context.Background()

	// The loss from the inference path: log-softmax of the last logits of
	// every labelled prefix (float32 logits, hence the tolerance).
	var ref float64
	for _, x := range f.batch {
		for t1, l := range x.Labels {
			if l == engine.IgnoreIndex {
				continue
			}
			lg, err := eng.LastLogits(ctx, [][]int{x.Tokens[:t1+1]}, nil)
			if err != nil {
				t.Fatal(err)
			}
			mx := math.Inf(-1)
			for _, v := range lg[0] {
				mx = math.Max(mx, float64(v))
			}
			var s float64
			for _, v := range lg[0] {
				s += math.Exp(float64(v) - mx)
			}
			ref += mx + math.Log(s) - float64(lg[0][l])
		}
	}
	if math.Abs(res.LossSum-ref) > 1e-5*math.Abs(ref) {
		t.Fatalf("loss_sum %.9g, from the logits %.9g", res.LossSum, ref)
	}

	loss := func() float64 {
		for _, p := range f.init {
			clear(p.Grad)
		}
		l, _, err := eng.LossGrad(ctx, f.batch, 0)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l := loss(); math.Abs(l-res.LossSum) > 1e-9*math.Abs(l) {
		t.Fatalf("loss at the init adapter %.12g, loss.json %.12g", l, res.LossSum)
	}
	// Global scale of the gradient, for an absolute floor on the tolerance.
	var gmax float64
	for _, g := range grads {
		for _, v := range g {
			gmax = math.Max(gmax, math.Abs(float64(v)))
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	checked, worst := 0, 0.0
	for k, p := range f.init {
		if k%2 == 1 && k != len(f.init)-1 { // every A, the last B, and the B entries below
			continue
		}
		for range 2 {
			i := rng.IntN(len(p.Value))
			v := p.Value[i]
			const h = 1e-3
			p.Value[i] = v + h
			up, dUp := loss(), float64(p.Value[i])
			p.Value[i] = v - h
			down, dDown := loss(), float64(p.Value[i])
			p.Value[i] = v
			fd := (up - down) / (dUp - dDown) // the exact float32 step
			g := float64(grads[p.Name][i])
			worst = math.Max(worst, math.Abs(fd-g)/(1e-4*math.Abs(g)+1e-5*gmax))
			if math.Abs(fd-g) > 1e-4*math.Abs(g)+1e-5*gmax {
				t.Errorf("%s[%d]: gradient %.9g, finite difference %.9g", p.Name, i, g, fd)
			}
			checked++
		}
	}
	// B entries of the other modules as well.
	for _, p := range f.init[1 : len(f.init)-1] {
		if !strings.HasSuffix(p.Name, "lora_B.weight") {
			continue
		}
		i := rng.IntN(len(p.Value))
		v := p.Value[i]
		p.Value[i] = v + 1e-3
		up, dUp := loss(), float64(p.Value[i])
		p.Value[i] = v - 1e-3
		down, dDown := loss(), float64(p.Value[i])
		p.Value[i] = v
		fd := (up - down) / (dUp - dDown)
		g := float64(grads[p.Name][i])
		worst = math.Max(worst, math.Abs(fd-g)/(1e-4*math.Abs(g)+1e-5*gmax))
		if math.Abs(fd-g) > 1e-4*math.Abs(g)+1e-5*gmax {
			t.Errorf("%s[%d]: gradient %.9g, finite difference %.9g", p.Name, i, g, fd)
		}
		checked++
	}
	t.Logf("%d entries against finite differences: worst error %.3g of the tolerance (largest gradient %.3g)", checked, worst, gmax)
	if checked < 10 || gmax == 0 {
		t.Fatalf("checked %d entries, largest gradient %g", checked, gmax)
	}

	// A bare list of examples is the same batch.
	var bare struct {
		Examples json.RawMessage `json:"examples"`
	}
	raw, _ := os.ReadFile(f.batchPath)
	if err := json.Unmarshal(raw, &bare); err != nil {
		t.Fatal(err)
	}
	f.batchPath = writeFile(t, filepath.Join(f.dir, "bare.json"), string(bare.Examples))
	out2 := filepath.Join(f.dir, "out2")
	if code, _, stderr := rella(t, f.args(out2, "--dtype", "float64")...); code != 0 {
		t.Fatalf("grads on a bare list: exit %d: %s", code, stderr)
	}
	b2, _ := os.ReadFile(filepath.Join(out2, "loss.json"))
	var res2 struct {
		LossSum float64 `json:"loss_sum"`
	}
	if err := json.Unmarshal(b2, &res2); err != nil || res2.LossSum != res.LossSum {
		t.Errorf("bare list: loss_sum %v (%v), want %v", res2.LossSum, err, res.LossSum)
	}
}

// Mistakes name the file, example or tensor at fault.
func TestGradsCommandErrors(t *testing.T) {
	f := newGradsFixture(t)
	out := filepath.Join(f.dir, "out")
	writeInit := func(name string, edit func(ts []safetensors.Tensor) []safetensors.Tensor) string {
		var ts []safetensors.Tensor
		for _, p := range f.init {
			ts = append(ts, safetensors.F32(p.Name, p.Shape, p.Value))
		}
		path := filepath.Join(f.dir, name)
		if err := safetensors.Write(path, edit(ts), nil); err != nil {
			t.Fatal(err)
		}
		return path
	}
	renamed := writeInit("renamed.safetensors", func(ts []safetensors.Tensor) []safetensors.Tensor {
		ts[0].Name = strings.Replace(ts[0].Name, "q_proj", "k_proj", 1)
		return ts
	})
	dropped := writeInit("dropped.safetensors", func(ts []safetensors.Tensor) []safetensors.Tensor { return ts[1:] })
	badBatch := writeFile(t, filepath.Join(f.dir, "bad.json"), `{"examples": [{"tokens": [1, 5, 6], "labels": [5, -100]}]}`)
	outside := writeFile(t, filepath.Join(f.dir, "outside.json"), `[{"tokens": [1, 500], "labels": [500, -100]}]`)
	unlabelled := writeFile(t, filepath.Join(f.dir, "none.json"), `[{"tokens": [1, 5], "labels": [-100, -100]}]`)
	missing := filepath.Join(f.dir, "nope.json")
	set := func(args []string, flag, v string) []string {
		a := slices.Clone(args)
		a[slices.Index(a, flag)+1] = v
		return a
	}
	base := f.args(out)
	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"missing batch", set(base, "--batch", missing), 1, []string{missing}},
		{"missing init", set(base, "--lora-init", missing), 1, []string{missing}},
		{"renamed tensor", set(base, "--lora-init", renamed), 1, []string{renamed, strings.Replace(f.init[0].Name, "q_proj", "k_proj", 1)}},
		{"missing tensor", set(base, "--lora-init", dropped), 1, []string{dropped, f.init[0].Name, "missing"}},
		{"wrong rank", set(set(base, "--r", "2"), "--alpha", "4"), 1, []string{f.initPath, "shape"}},
		{"wrong targets", set(base, "--targets", "q_proj,v_proj"), 1, []string{f.initPath, "down_proj"}},
		{"label count", set(base, "--batch", badBatch), 1, []string{badBatch, "example 0", "3 tokens, 2 labels"}},
		{"outside vocab", set(base, "--batch", outside), 1, []string{outside, "vocabulary"}},
		{"no labels", set(base, "--batch", unlabelled), 1, []string{unlabelled, "no labelled"}},
		{"cpu bf16", append(slices.Clone(base), "--dtype", "bf16"), 2, []string{"bf16"}},
		{"gpu float64", append(slices.Clone(base), "--device", "gpu", "--dtype", "float64"), 2, []string{"float64"}},
		{"no out", []string{"grads", "--model", f.modelDir, "--batch", f.batchPath, "--lora-init", f.initPath}, 2, []string{"--out"}},
		{"bad target", set(base, "--targets", "q_proj,x_proj"), 2, []string{"x_proj"}},
	}
	for _, c := range cases {
		code, _, stderr := rella(t, c.args...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, c.code, stderr)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr %q does not name %q", c.name, stderr, w)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(out, "grads.safetensors")); err == nil {
		t.Error("a failed run wrote grads.safetensors")
	}
}
