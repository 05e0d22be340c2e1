package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/tokenizer"
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

// openEngine returns the engine model.device names, with LoRA when lo is set.
func (r *Runner) openEngine(m *model.Model, lo *cpu.LoRA) (engine.Engine, error) {
	c := r.Cfg.Model
	switch c.Device {
	case "gpu":
		if lo != nil {
			return nil, errors.New("model.device: LoRA training on the gpu engine is not available yet; use model.device=cpu")
		}
		return cuda.NewEngine(m, c.DeviceIndex, r.Log)
	default:
		return cpu.New(m, cpu.Options{DType: c.DType, LoRA: lo, MaxBatch: r.Cfg.Model.BatchSize})
	}
}
