package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/safetensors"
)

// gradsCommand computes the first-step LoRA gradients of one batch, the Go
// side of scripts/hf_peft.py's `step` (same batch file, same starting
// adapter, same output files, so `hf_peft.py compare` reads both).
//
// Normalisation, as hf_peft.py step: the loss is the SUM of the
// cross-entropy over every labelled token of every example (no division by
// the token count), and grads.safetensors holds the gradient of that sum.
// loss.json also gives the mean (loss_sum / tokens) for reference.
func gradsCommand() command {
	return command{
		name:    "grads",
		summary: "LoRA gradients of one batch from a given adapter (the Go side of scripts/hf_peft.py step)",
		usage: "rella grads --model DIR --batch FILE.json --lora-init FILE.safetensors --out DIR " +
			"[--device cpu|gpu] [--dtype float32|float64|bf16|fp16] [--r 8 --alpha 16 --targets q_proj,v_proj]",
		examples: []string{
			"rella grads --model ../shared/fixtures/stories260K --batch batch.json --lora-init lora_init.safetensors --out grads-cpu",
			"rella grads --model /models/vicuna-7b --batch batch.json --lora-init lora_init.safetensors --out grads-gpu --device gpu --dtype bf16",
		},
		run: runGrads,
	}
}

// gradsLoss is the content of OUT/loss.json.
type gradsLoss struct {
	LossSum       float64  `json:"loss_sum"`
	Tokens        int      `json:"tokens"`
	NTokens       int      `json:"n_tokens"` // = tokens, hf_peft.py's key
	LossMean      float64  `json:"loss_mean"`
	GradNorm      float64  `json:"grad_norm"`
	Normalisation string   `json:"normalisation"`
	Device        string   `json:"device"`
	DType         string   `json:"dtype"`
	Model         string   `json:"model"`
	Batch         string   `json:"batch"`
	LoRAInit      string   `json:"lora_init"`
	R             int      `json:"r"`
	Alpha         float64  `json:"lora_alpha"`
	Targets       []string `json:"targets"`
	Examples      int      `json:"examples"`
}

func runGrads(ctx context.Context, e *env, args []string) error {
	d := lora.DefaultOptions()
	fs := newFlags("grads")
	dir := fs.String("model", "", "HF LLaMA checkpoint folder (config.json + safetensors)")
	batchPath := fs.String("batch", "", `batch file of hf_peft.py make-data: {"examples": [{"tokens": [...], "labels": [...]}, ...]} or a bare list`)
	initPath := fs.String("lora-init", "", "safetensors file with every LoRA A/B tensor (PEFT names) to start from")
	out := fs.String("out", "", "folder for grads.safetensors and loss.json (created if needed)")
	device := fs.String("device", "cpu", "engine: cpu (Gorgonia) or gpu (CUDA)")
	dtype := fs.String("dtype", "float32", "precision: cpu float32|float64, gpu float32|bf16|fp16")
	r := fs.Int("r", d.R, "LoRA rank")
	alpha := fs.Float64("alpha", d.Alpha, "LoRA alpha (scale alpha/r)")
	targets := fs.String("targets", strings.Join(d.TargetModules, ","), "comma-separated target modules")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected argument %q", rest[0])
	}
	if *dir == "" || *batchPath == "" || *initPath == "" || *out == "" {
		return usageErrorf("--model, --batch, --lora-init and --out are required")
	}
	var precision string
	switch *device {
	case "cpu":
		if *dtype != "float32" && *dtype != "float64" {
			return usageErrorf("--dtype %q: the cpu engine computes in float32 or float64", *dtype)
		}
	case "gpu":
		p, ok := map[string]string{"float32": "f32", "bf16": "bf16", "fp16": "f16"}[*dtype]
		if !ok {
			return usageErrorf("--dtype %q: the gpu engine computes in float32, bf16 or fp16", *dtype)
		}
		precision = p
	default:
		return usageErrorf("--device %q: want cpu or gpu", *device)
	}
	o := lora.Options{R: *r, Alpha: *alpha, Dropout: 0, TargetModules: strings.Split(*targets, ",")}
	if err := o.Validate(); err != nil {
		return usageErrorf("%v", err)
	}

	batch, err := readGradsBatch(*batchPath)
	if err != nil {
		return err
	}
	m, err := model.Load(*dir)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := checkBatchVocab(*batchPath, batch, m.Config.VocabSize); err != nil {
		return err
	}
	c := m.Config
	tg, err := lora.Targets(o, c.NumHiddenLayers, c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.IntermediateSize)
	if err != nil {
		return err
	}
	params := lora.Init(o, tg, 0) // names, shapes and zeroed Grad; values come from the init file
	if err := loadLoRAInit(*initPath, params); err != nil {
		return err
	}

	var tr engine.Trainer
	if *device == "gpu" {
		tr, err = cuda.NewTrainer(m, cuda.TrainOptions{Options: cuda.Options{Precision: precision},
			Scale: o.Scale(), Dropout: 0, Params: params}, e.log)
	} else {
		tr, err = cpu.New(m, cpu.Options{DType: *dtype, LoRA: &cpu.LoRA{Scale: o.Scale(), Dropout: 0, Params: params}, Log: e.log})
	}
	if err != nil {
		return err
	}
	defer tr.Close()
	for _, p := range tr.Params() {
		clear(p.Grad)
	}
	e.log.Info("grads: loss and gradients", "examples", len(batch), "device", *device, "dtype", *dtype, "tensors", len(params))
	lossSum, nTok, err := tr.LossGrad(ctx, batch, 0)
	if err != nil {
		return err
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	var tensors []safetensors.Tensor
	var sq float64
	for _, p := range tr.Params() {
		for _, g := range p.Grad {
			if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
				return fmt.Errorf("grads: tensor %s: non-finite gradient", p.Name)
			}
			sq += float64(g) * float64(g)
		}
		tensors = append(tensors, safetensors.F32(p.Name, p.Shape, p.Grad))
	}
	gradsPath := filepath.Join(*out, "grads.safetensors")
	if err := safetensors.Write(gradsPath, tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	res := gradsLoss{LossSum: lossSum, Tokens: nTok, NTokens: nTok, LossMean: lossSum / float64(max(1, nTok)),
		GradNorm: math.Sqrt(sq),
		Normalisation: "sum: loss_sum = sum of cross-entropy over all labelled tokens (labels[t] is the target of logits[t]); " +
			"grads.safetensors = d loss_sum / d LoRA (not divided by tokens), as hf_peft.py step",
		Device: *device, DType: *dtype, Model: *dir, Batch: *batchPath, LoRAInit: *initPath,
		R: o.R, Alpha: o.Alpha, Targets: o.TargetModules, Examples: len(batch)}
	b, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return err
	}
	lossPath := filepath.Join(*out, "loss.json")
	if err := os.WriteFile(lossPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(e.stdout, "CHECK go_grads_%s_%s loss_sum=%.6f n=%d mean=%.6f grad_norm=%.6g tensors=%d -> %s\n",
		*device, *dtype, lossSum, nTok, res.LossMean, res.GradNorm, len(tensors), *out); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
}

// readGradsBatch reads hf_peft.py's batch format: {"examples": [...]} (other
// keys, such as make-data's "steps", are ignored) or a bare list of
// {"tokens": [...], "labels": [...]}, rella's label convention
// (engine.Example: labels[t] is the target after tokens[:t+1], or -100).
func readGradsBatch(path string) ([]engine.Example, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--batch: %w", err)
	}
	type ex struct {
		Tokens *[]int `json:"tokens"`
		Labels *[]int `json:"labels"`
	}
	var exs []ex
	trimmed := strings.TrimSpace(string(raw))
	if strings.HasPrefix(trimmed, "[") {
		err = json.Unmarshal(raw, &exs)
	} else {
		var obj struct {
			Examples []ex `json:"examples"`
		}
		err = json.Unmarshal(raw, &obj)
		exs = obj.Examples
	}
	if err != nil {
		return nil, fmt.Errorf("--batch %s: %w", path, err)
	}
	if len(exs) == 0 {
		return nil, fmt.Errorf("--batch %s: no examples", path)
	}
	batch := make([]engine.Example, len(exs))
	labelled := 0
	for i, x := range exs {
		if x.Tokens == nil || x.Labels == nil {
			return nil, fmt.Errorf("--batch %s: example %d: want {\"tokens\", \"labels\"}", path, i)
		}
		t, l := *x.Tokens, *x.Labels
		if len(t) == 0 || len(t) != len(l) {
			return nil, fmt.Errorf("--batch %s: example %d: %d tokens, %d labels", path, i, len(t), len(l))
		}
		for j := range t {
			if t[j] < 0 || (l[j] < 0 && l[j] != engine.IgnoreIndex) {
				return nil, fmt.Errorf("--batch %s: example %d position %d: token %d, label %d (ids >= 0, labels ids or %d)",
					path, i, j, t[j], l[j], engine.IgnoreIndex)
			}
			if l[j] != engine.IgnoreIndex {
				labelled++
			}
		}
		batch[i] = engine.Example{Tokens: t, Labels: l}
	}
	if labelled == 0 {
		return nil, fmt.Errorf("--batch %s: no labelled token (every label is %d)", path, engine.IgnoreIndex)
	}
	return batch, nil
}

// checkBatchVocab reports the first token or label outside the vocabulary.
func checkBatchVocab(path string, batch []engine.Example, vocab int) error {
	for i, x := range batch {
		for j := range x.Tokens {
			if x.Tokens[j] >= vocab || x.Labels[j] >= vocab {
				return fmt.Errorf("--batch %s: example %d position %d: token %d, label %d outside the vocabulary (%d)",
					path, i, j, x.Tokens[j], x.Labels[j], vocab)
			}
		}
	}
	return nil
}

// loadLoRAInit copies the tensors of the safetensors file path (F32, F16 or
// BF16, PEFT names) into params, which must match its names exactly.
func loadLoRAInit(path string, params []*engine.Param) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return fmt.Errorf("--lora-init: %w", err)
	}
	defer f.Close()
	want := make(map[string]bool, len(params))
	for _, p := range params {
		want[p.Name] = true
	}
	var src []*engine.Param
	for _, name := range f.Names() {
		if !want[name] {
			return fmt.Errorf("--lora-init %s: tensor %q is not a LoRA tensor of this model with these --targets/--r", path, name)
		}
		info, _ := f.Info(name)
		switch info.DType {
		case safetensors.DTypeF32, safetensors.DTypeF16, safetensors.DTypeBF16:
		default:
			return fmt.Errorf("--lora-init %s: tensor %q: dtype %s not supported (F32, F16, BF16)", path, name, info.DType)
		}
		v, err := f.Float32s(name)
		if err != nil {
			return fmt.Errorf("--lora-init %s: tensor %q: %w", path, name, err)
		}
		src = append(src, &engine.Param{Name: name, Shape: append([]int(nil), info.Shape...), Value: v})
	}
	have := make(map[string]bool, len(src))
	for _, p := range src {
		have[p.Name] = true
	}
	for _, p := range params {
		if !have[p.Name] {
			return fmt.Errorf("--lora-init %s: tensor %q missing", path, p.Name)
		}
	}
	if err := lora.Assign(params, src); err != nil {
		return fmt.Errorf("--lora-init %s: %w", path, err)
	}
	return nil
}
