package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/tokenizer"
	"github.com/rella-project/rella/trainer"
)

// generateModel writes the project-made random model into model.path when
// generate.model is set and the folder holds no config.json yet.
func (r *Runner) generateModel() error {
	c := r.Cfg
	if !c.Generate.Model {
		return nil
	}
	if _, err := os.Stat(filepath.Join(c.Model.Path, "config.json")); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("generate.model: %w", err)
	}
	if c.Generate.Tokenizer != "" {
		if _, err := os.Stat(c.Generate.Tokenizer); err != nil {
			return fmt.Errorf("generate.tokenizer: the tokenizer to copy beside the generated model is missing: %w (the quickstart uses the LLaMA tokenizer from the project's shared/fixtures folder beside the repository)", err)
		}
	}
	o := model.DefaultInitOptions()
	g := c.Generate
	o.Hidden, o.Layers, o.Heads, o.KVHeads, o.Intermediate = g.Hidden, g.Layers, g.Heads, g.KVHeads, g.FFN
	o.Seed, o.Tokenizer, o.Std = c.Seed, g.Tokenizer, g.InitStd
	r.Log.Info("model: writing a random LLaMA", "dir", c.Model.Path, "hidden", o.Hidden, "layers", o.Layers)
	if err := model.Init(c.Model.Path, o); err != nil {
		return fmt.Errorf("generate.model: %w", err)
	}
	return nil
}

// loadTokenizer opens model.tokenizer, or the model folder's tokenizer
// files (generating the model first when configured).
func (r *Runner) loadTokenizer() (*tokenizer.Tokenizer, error) {
	if err := r.generateModel(); err != nil {
		return nil, err
	}
	p := r.Cfg.Model.Tokenizer
	if p == "" {
		if err := model.CheckDir(r.Cfg.Model.Path); err != nil {
			return nil, fmt.Errorf("model.path: %w", err)
		}
		p = r.Cfg.Model.Path
	}
	tok, err := tokenizer.Load(p)
	if err != nil {
		return nil, fmt.Errorf("model.tokenizer: %w", err)
	}
	return tok, nil
}

// answerIDs returns the ids of ▁Yes and ▁No in tok.
func answerIDs(tok *tokenizer.Tokenizer) (yes, no int, err error) {
	yes, ok1 := tok.PieceID("▁Yes")
	no, ok2 := tok.PieceID("▁No")
	if !ok1 || !ok2 {
		return 0, 0, errors.New("model.tokenizer: the vocabulary has no ▁Yes or ▁No piece, which scoring reads")
	}
	return yes, no, nil
}

// openModel loads the checkpoint (generating it first when configured).
func (r *Runner) openModel() (*model.Model, error) {
	if err := r.generateModel(); err != nil {
		return nil, err
	}
	m, err := model.Load(r.Cfg.Model.Path)
	if err != nil {
		return nil, fmt.Errorf("model.path: %w", err)
	}
	return m, nil
}

// gpuOptions maps the model section onto the GPU engine's options.
func (r *Runner) gpuOptions() cuda.Options {
	precision := map[string]string{"bf16": "bf16", "fp16": "f16", "float32": "f32"}[r.Cfg.Model.DType]
	return cuda.Options{Device: r.Cfg.Model.DeviceIndex, Precision: precision, Quantize: r.quantize()}
}

// openEngine returns the engine model.device names, with the LoRA adapter
// lo applied when it is non-nil.
func (r *Runner) openEngine(m *model.Model, lo *cpu.LoRA) (engine.Engine, error) {
	if lo != nil {
		return r.openTrainer(m, lo, nil)
	}
	if r.Cfg.Model.Device == "gpu" {
		return cuda.NewEngineWith(m, r.gpuOptions(), r.Log)
	}
	return cpu.New(m, cpu.Options{DType: r.Cfg.Model.DType, MaxBatch: r.Cfg.Model.BatchSize, Quantize: r.quantize(), Log: r.cpuLog()})
}

// openTrainer returns an engine that can also train the adapter lo. On the
// GPU, the training examples (nil when only scoring) size its passes: a
// LossGrad pass holds one micro-batch, so the memory check plans for
// micro_batch_size × the longest example (and its labelled tokens), and
// scoring passes hold model.batch_size × the longest example.
func (r *Runner) openTrainer(m *model.Model, lo *cpu.LoRA, examples []engine.Example) (engine.Trainer, error) {
	if r.Cfg.Model.Device == "gpu" {
		o := cuda.TrainOptions{Options: r.gpuOptions(), Scale: lo.Scale, Dropout: lo.Dropout, Params: lo.Params}
		longest, labelled := 0, 0
		for _, ex := range examples {
			longest = max(longest, len(ex.Tokens))
			n := 0
			for _, y := range ex.Labels {
				if y != engine.IgnoreIndex {
					n++
				}
			}
			labelled = max(labelled, n)
		}
		if longest > 0 {
			mb := r.Cfg.Training.MicroBatchSize
			o.PassTokens, o.MaxLabelled = mb*longest, mb*labelled
			o.MaxTokens = max(mb, r.Cfg.Model.BatchSize) * longest
		}
		return cuda.NewTrainer(m, o, r.Log)
	}
	return cpu.New(m, cpu.Options{DType: r.Cfg.Model.DType, LoRA: lo, MaxBatch: r.Cfg.Training.MicroBatchSize, Quantize: r.quantize(), Log: r.cpuLog()})
}

// cpuLog is the logger of a new CPU engine, whose one line names the GEMM
// in use: the Runner's for its first engine, nil (none) for the later ones,
// which open the same library (a run opens an engine per stage).
func (r *Runner) cpuLog() *slog.Logger {
	if r.gemmLogged {
		return nil
	}
	r.gemmLogged = true
	return r.Log
}

// quantize is model.quantize for the engines: "" or "int8".
func (r *Runner) quantize() string {
	if r.Cfg.Model.Quantize == "none" {
		return ""
	}
	return r.Cfg.Model.Quantize
}

// lossScaling is on for fp16 training on the GPU (dynamic loss scaling
// with GradScaler's defaults); bf16 and float32 do not need it.
func (r *Runner) lossScaling() trainer.LossScaling {
	if r.Cfg.Model.Device == "gpu" && r.Cfg.Model.DType == "fp16" {
		return trainer.DefaultLossScaling()
	}
	return trainer.LossScaling{}
}
