// Package engine defines the narrow interface between the pipeline and the
// code that runs the LLaMA decoder (the Gorgonia CPU engine, or the CUDA one).
//
// Token sequences are plain id slices; BOS is already prepended by the caller.
// Batching, padding and masks are the engine's business: callers may pass
// sequences of different lengths in one call.
package engine

import "context"

// Engine runs the frozen model forward for scoring and item embeddings.
type Engine interface {
	// LastLogits returns, for each sequence, the logits at its last token.
	// When rows is non-nil only those vocabulary rows are returned, in the
	// order given (scoring needs just ▁No and ▁Yes); nil means the full vocabulary.
	LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error)
	// MeanHidden returns, for each sequence, the final-norm hidden states
	// averaged over all of its tokens (padding excluded).
	MeanHidden(ctx context.Context, seqs [][]int) ([][]float32, error)
	// Close releases the engine's resources.
	Close() error
}

// Example is one training sequence for causal-LM loss.
// Labels has the length of Tokens; Labels[t] is the token the model should
// predict after reading Tokens[:t+1] (already shifted), or IgnoreIndex.
type Example struct {
	Tokens []int
	Labels []int
}

// IgnoreIndex marks a position that contributes no loss (HF's -100).
const IgnoreIndex = -100

// Param is one trainable tensor (a LoRA A or B matrix) and its gradient,
// both row-major float32 of the same length.
type Param struct {
	Name  string // PEFT tensor name, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
	Shape []int
	Value []float32
	Grad  []float32
}

// Trainer is an Engine that can also compute LoRA gradients.
type Trainer interface {
	Engine
	// Params returns the trainable tensors in a fixed order. The slices are
	// owned by the engine; the optimiser updates Value in place and the
	// engine reads it on the next call.
	Params() []*Param
	// LossGrad runs forward and backward over a micro-batch in training mode
	// (LoRA dropout drawn from dropoutSeed) and ADDS the gradient of the
	// summed cross-entropy over all labelled tokens into each Param.Grad.
	// It returns that sum and the number of labelled tokens.
	LossGrad(ctx context.Context, batch []Example, dropoutSeed uint64) (lossSum float64, nTokens int, err error)
}

// LossScaler is a Trainer that supports dynamic loss scaling (fp16
// training): after SetLossScale(s), LossGrad adds s times the gradient of
// the summed cross-entropy into each Param.Grad (the backward pass is
// seeded with s instead of 1), while the returned loss stays unscaled. An
// overflow shows up as an inf or NaN gradient, which the trainer checks
// once per optimiser step.
type LossScaler interface {
	Trainer
	SetLossScale(s float64)
}
