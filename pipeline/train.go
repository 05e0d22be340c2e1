package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/internal/progress"
	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/model"
	"github.com/rella-project/rella/prompt"
	"github.com/rella-project/rella/retrieval"
	"github.com/rella-project/rella/tokenizer"
	"github.com/rella-project/rella/trainer"
)

// trainingExample builds one causal-LM example: the Vicuna-wrapped prompt,
// a space and the answer ("Yes." / "No."), BOS first and no EOS (the
// authors add EOS and then drop it, RELLA.md section 2), with labels on the
// answer tokens only (▁Yes|▁No and ".").
func trainingExample(tok *tokenizer.Tokenizer, text string, label int8) (engine.Example, error) {
	wrapped := prompt.Vicuna(text)
	promptIDs := tok.Encode(wrapped, true)
	full := tok.Encode(wrapped+" "+prompt.Answer(label), true)
	n := len(promptIDs)
	if len(full) <= n || !slices.Equal(full[:n], promptIDs) {
		return engine.Example{}, fmt.Errorf("train: the answer does not tokenize as a continuation of the prompt (prompt %d tokens, with answer %d)", n, len(full))
	}
	labels := make([]int, len(full))
	for t := range labels {
		labels[t] = engine.IgnoreIndex
		if t >= n-1 && t+1 < len(full) {
			labels[t] = full[t+1]
		}
	}
	return engine.Example{Tokens: full, Labels: labels}, nil
}

// Train fine-tunes LoRA adapters on the ReiT mix (RELLA.md section 5),
// evaluating on the validation split, then scores the test split with the
// best adapter (by validation AUC; the final one without validation) and
// writes OUTPUT_DIR/train/{predictions.jsonl,metrics.json} and the adapter
// to OUTPUT_DIR/adapter. With resume it continues from the newest complete
// checkpoint.
func (r *Runner) Train(ctx context.Context, ds *data.Dataset, resume bool) (metrics.Result, error) {
	c := r.Cfg
	tok, err := r.loadTokenizer()
	if err != nil {
		return metrics.Result{}, err
	}
	yes, no, err := answerIDs(tok)
	if err != nil {
		return metrics.Result{}, err
	}

	// The training set: N drawn samples, built with recency and/or SUBR histories.
	mix, useSUBR, err := retrieval.Mix(ds.Train, c.Retrieval.TrainSamples, c.Data.SampleSeed, c.Retrieval.TrainType)
	if err != nil {
		return metrics.Result{}, err
	}
	var subr *retrieval.Selector
	if slices.Contains(useSUBR, true) || c.Retrieval.Enabled {
		if subr, err = r.SUBRSelector(ctx, ds); err != nil {
			return metrics.Result{}, err
		}
	}
	b, err := prompt.New(ds.Kind, c.Prompt)
	if err != nil {
		return metrics.Result{}, err
	}
	k := c.Data.HistoryLen
	examples := make([]engine.Example, len(mix))
	var hist []int32
	for i, s := range mix {
		var sel prompt.Selector = prompt.Recent{}
		if useSUBR[i] {
			sel = subr
		}
		hist = sel.Select(s, k, hist[:0])
		ex, err := trainingExample(tok, b.Prompt(ds, s, hist), s.Label)
		if err != nil {
			return metrics.Result{}, fmt.Errorf("train sample %d: %w", i, err)
		}
		if c.Training.SequenceLen > 0 && len(ex.Tokens) > c.Training.SequenceLen {
			return metrics.Result{}, fmt.Errorf("train sample %d: %d tokens exceed training.sequence_len %d (lower data.history_len or raise sequence_len)", i, len(ex.Tokens), c.Training.SequenceLen)
		}
		examples[i] = ex
	}

	// Evaluation prompts: validation and test, with SUBR histories when retrieval is on.
	var evalSel prompt.Selector = prompt.Recent{}
	if c.Retrieval.Enabled {
		evalSel = subr
	}
	valid := c.Data.Limit(ds.Valid)
	test := c.Data.Limit(ds.Test)
	validSeqs, err := r.encodePrompts(ds, valid, evalSel, tok)
	if err != nil {
		return metrics.Result{}, err
	}

	m, err := r.openModel()
	if err != nil {
		return metrics.Result{}, err
	}
	defer m.Close()
	params, err := newAdapter(c.LoRA, m.Config, c.Seed)
	if err != nil {
		return metrics.Result{}, err
	}
	eng, err := r.openTrainer(m, &cpu.LoRA{Scale: c.LoRA.Scale(), Dropout: c.LoRA.Dropout, Params: params})
	if err != nil {
		return metrics.Result{}, err
	}
	defer eng.Close()
	// One reporter for the training bar and the evaluation and test
	// scoring bars, so that they nest; the trainer's log records go through
	// it too (on a terminal they clear the bar first).
	rep := reporterFor(r.Progress, r.Log)
	sc := &Scorer{Engine: eng, Yes: yes, No: no, BatchSize: c.Model.BatchSize, Progress: rep}
	var eval trainer.Evaluator
	if len(valid) > 0 {
		labels := labelsOf(valid)
		eval = func(ctx context.Context) (metrics.Result, error) {
			p, err := sc.PYes(ctx, validSeqs, "eval")
			if err != nil {
				return metrics.Result{}, err
			}
			return metrics.Compute(labels, p), nil
		}
	}
	cfgBytes, err := c.Marshal()
	if err != nil {
		return metrics.Result{}, err
	}
	mfp, err := modelFingerprint(c.Model.Path)
	if err != nil {
		return metrics.Result{}, err
	}
	opts := c.Training
	if resume && opts.ResumeFromCheckpoint == "" {
		opts.ResumeFromCheckpoint = "auto"
	}
	sum, err := trainer.Run(ctx, trainer.Job{
		Engine: eng, Train: examples, Options: opts,
		LoRA: c.LoRA, BaseModel: c.Model.Path, Seed: uint64(c.Seed),
		Dir: r.path("train"), Config: cfgBytes,
		Fingerprint: map[string]string{
			"model":         mfp,
			"data":          string(c.Data.Dataset) + ":" + c.Data.Dir,
			"history_len":   strconv.Itoa(c.Data.HistoryLen),
			"train_type":    c.Retrieval.TrainType,
			"train_samples": strconv.Itoa(c.Retrieval.TrainSamples),
			"sample_seed":   strconv.FormatInt(c.Data.SampleSeed, 10),
		},
		Force:    r.Force,
		Evaluate: eval, Log: r.Log, Progress: rep,
	})
	if err != nil {
		return metrics.Result{}, err
	}

	// Final evaluation on the test split with the chosen adapter.
	chosen := sum.FinalAdapter
	if sum.HasBest && sum.BestAdapter != "" {
		chosen = sum.BestAdapter
	}
	if err := loadAdapterInto(chosen, eng.Params()); err != nil {
		return metrics.Result{}, err
	}
	if err := lora.Save(r.path("adapter"), c.LoRA, c.Model.Path, eng.Params()); err != nil {
		return metrics.Result{}, err
	}
	testSeqs, err := r.encodePrompts(ds, test, evalSel, tok)
	if err != nil {
		return metrics.Result{}, err
	}
	p, err := sc.PYes(ctx, testSeqs, "test")
	if err != nil {
		return metrics.Result{}, err
	}
	res, err := writePredictions(r.path("train"), test, p)
	if err != nil {
		return metrics.Result{}, err
	}
	r.Log.Info("train: done", "steps", sum.Steps, "adapter", chosen, "test_auc", progress.Fixed(res.AUC, 4),
		"test_logloss", progress.Fixed(res.LogLoss, 4), "test_acc", progress.Fixed(res.Accuracy, 4)) // full precision: train/metrics.json
	return res, nil
}

// newAdapter makes fresh LoRA tensors for the model's shape.
func newAdapter(o lora.Options, mc model.Config, seed int64) ([]*engine.Param, error) {
	targets, err := lora.Targets(o, mc.NumHiddenLayers, mc.HiddenSize, mc.NumAttentionHeads, mc.NumKeyValueHeads, mc.HeadDim, mc.IntermediateSize)
	if err != nil {
		return nil, err
	}
	return lora.Init(o, targets, seed), nil
}

// loadAdapterInto copies the adapter saved in dir into params, by name.
func loadAdapterInto(dir string, params []*engine.Param) error {
	_, saved, err := lora.Load(dir)
	if err != nil {
		return err
	}
	if err := lora.Assign(params, saved); err != nil {
		return fmt.Errorf("train: adapter %s: %w", dir, err)
	}
	return nil
}

func labelsOf(samples []data.Sample) []int {
	l := make([]int, len(samples))
	for i, s := range samples {
		l[i] = int(s.Label)
	}
	return l
}
