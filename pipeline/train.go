package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/rella-project/rella/configs"
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
// writes the adapter to OUTPUT_DIR/adapter and the test results to
// OUTPUT_DIR/train/test-recency and, when retrieval.enabled, also
// OUTPUT_DIR/train/test-subr ({predictions.jsonl,metrics.json}). With resume
// it continues from the newest complete checkpoint, and returns the test
// results without training when they are up to date (same fingerprint, and
// the adapter they were made with is still OUTPUT_DIR/adapter).
func (r *Runner) Train(ctx context.Context, ds *data.Dataset, resume bool) ([]Result, error) {
	c := r.Cfg
	tok, err := r.loadTokenizer()
	if err != nil {
		return nil, err
	}
	yes, no, err := answerIDs(tok)
	if err != nil {
		return nil, err
	}

	// The training set: N drawn samples, built with recency and/or SUBR histories.
	mix, useSUBR, err := retrieval.Mix(ds.Train, c.Retrieval.TrainSamples, c.Data.SampleSeed, c.Retrieval.TrainType)
	if err != nil {
		return nil, err
	}
	var subr *retrieval.Selector
	vecFP := ""
	if slices.Contains(useSUBR, true) || c.Retrieval.Enabled {
		if subr, vecFP, err = r.subrSelector(ctx, ds); err != nil {
			return nil, err
		}
	}

	// The test evaluations: recency histories, and SUBR ones when retrieval
	// is on (then SUBR also selects the validation prompts).
	type evalJob struct {
		v   Variant
		sel prompt.Selector
		rec *Record
	}
	histories := []string{HistoryRecency}
	if c.Retrieval.Enabled {
		histories = append(histories, HistorySUBR)
	}
	adapterDir := r.path("adapter")
	trainingFP := trainingFingerprint(c)
	newRecords := func(adapterFP string) ([]*evalJob, error) {
		var jobs []*evalJob
		for _, h := range histories {
			j := &evalJob{v: Variant{Stage: "train", Split: "test", History: h, Adapter: adapterDir, FineTuned: true}, sel: prompt.Recent{}}
			if h == HistorySUBR {
				j.sel = subr
			}
			if j.rec, err = r.newRecord(j.v, adapterDir, adapterFP, vecFP, map[string]string{"training": trainingFP}); err != nil {
				return nil, err
			}
			jobs = append(jobs, j)
		}
		return jobs, nil
	}
	if resume {
		if afp, err := adapterFingerprint(adapterDir); err == nil {
			jobs, err := newRecords(afp)
			if err != nil {
				return nil, err
			}
			var out []Result
			for _, j := range jobs {
				dir := r.path("train", j.v.Dir())
				old, ok := r.upToDate(dir, j.rec)
				if !ok {
					out = nil
					break
				}
				out = append(out, Result{Variant: j.v, Dir: dir, K: old.K, Metrics: old.Result, Reused: true})
			}
			if out != nil {
				r.Log.Info("train: finished and evaluated with these settings; reused (--resume)", "adapter", adapterDir)
				return out, nil
			}
		}
	}

	b, err := prompt.New(ds.Kind, c.Prompt)
	if err != nil {
		return nil, err
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
			return nil, fmt.Errorf("train sample %d: %w", i, err)
		}
		if c.Training.SequenceLen > 0 && len(ex.Tokens) > c.Training.SequenceLen {
			return nil, fmt.Errorf("train sample %d: %d tokens exceed training.sequence_len %d (lower data.history_len or raise sequence_len)", i, len(ex.Tokens), c.Training.SequenceLen)
		}
		examples[i] = ex
	}

	// Validation prompts: with SUBR histories when retrieval is on.
	var evalSel prompt.Selector = prompt.Recent{}
	if c.Retrieval.Enabled {
		evalSel = subr
	}
	valid := c.Data.Limit(ds.Valid)
	test := c.Data.Limit(ds.Test)
	validSeqs, err := r.encodePrompts(ds, valid, evalSel, tok)
	if err != nil {
		return nil, err
	}

	m, err := r.openModel()
	if err != nil {
		return nil, err
	}
	defer m.Close()
	params, err := newAdapter(c.LoRA, m.Config, c.Seed)
	if err != nil {
		return nil, err
	}
	eng, err := r.openTrainer(m, &cpu.LoRA{Scale: c.LoRA.Scale(), Dropout: c.LoRA.Dropout, Params: params}, examples)
	if err != nil {
		return nil, err
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
		return nil, err
	}
	mfp, err := r.modelFingerprint()
	if err != nil {
		return nil, err
	}
	opts := c.Training
	if resume && opts.ResumeFromCheckpoint == "" {
		opts.ResumeFromCheckpoint = "auto"
	}
	jobFP := map[string]string{
		"model":         mfp,
		"data":          string(c.Data.Dataset) + ":" + c.Data.Dir,
		"history_len":   strconv.Itoa(c.Data.HistoryLen),
		"train_type":    c.Retrieval.TrainType,
		"train_samples": strconv.Itoa(c.Retrieval.TrainSamples),
		"sample_seed":   strconv.FormatInt(c.Data.SampleSeed, 10),
	}
	if q := r.quantize(); q != "" {
		jobFP["model.quantize"] = q // the adapter learns on the quantised base
	}
	sum, err := trainer.Run(ctx, trainer.Job{
		Engine: eng, Train: examples, Options: opts,
		LoRA: c.LoRA, BaseModel: c.Model.Path, Seed: uint64(c.Seed),
		Dir: r.path("train"), Config: cfgBytes,
		Fingerprint: jobFP,
		Force:       r.Force,
		LossScaling: r.lossScaling(),
		Evaluate:    eval, Log: r.Log, Progress: rep,
		Comm: r.Comm,
	})
	if err != nil {
		return nil, err
	}
	if r.Comm != nil && r.Comm.Rank() != 0 {
		r.Log.Info("train: this rank is done; rank 0 writes the adapter and the test evaluation", "rank", r.Comm.Rank(), "steps", sum.Steps)
		return nil, nil
	}

	// Final evaluation on the test split with the chosen adapter.
	chosen := sum.FinalAdapter
	if sum.HasBest && sum.BestAdapter != "" {
		chosen = sum.BestAdapter
	}
	if err := loadAdapterInto(chosen, eng.Params()); err != nil {
		return nil, err
	}
	if err := lora.Save(adapterDir, c.LoRA, c.Model.Path, eng.Params()); err != nil {
		return nil, err
	}
	afp, err := adapterFingerprint(adapterDir)
	if err != nil {
		return nil, err
	}
	jobs, err := newRecords(afp)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, j := range jobs {
		testSeqs, err := r.encodePrompts(ds, test, j.sel, tok)
		if err != nil {
			return nil, err
		}
		dir := r.path("train", j.v.Dir())
		res, err := r.evaluate(ctx, sc, dir, j.rec, ds, test, testSeqs)
		if err != nil {
			return nil, fmt.Errorf("train: test evaluation %s: %w", j.v.Dir(), err)
		}
		r.Log.Info("train: test evaluation", "variant", j.v.Dir(), "adapter", chosen, "n", res.N,
			"auc", progress.Fixed(res.AUC, 4), "logloss", progress.Fixed(res.LogLoss, 4), "acc", progress.Fixed(res.Accuracy, 4)) // full precision: metrics.json
		out = append(out, Result{Variant: j.v, Dir: dir, K: k, Metrics: res})
	}
	r.Log.Info("train: done", "steps", sum.Steps, "adapter", chosen)
	return out, nil
}

// trainingFingerprint hashes the settings that decide the trained adapter
// beyond those every evaluation records: the training, LoRA and ReiT
// sections and the seed, without the settings that only say how the run is
// logged, saved or resumed.
func trainingFingerprint(c *configs.Config) string {
	t := c.Training
	t.LoggingSteps, t.SaveSteps, t.SaveTotalLimit, t.ResumeFromCheckpoint, t.RecordBatches, t.OverwriteOutputDir = 0, 0, 0, "", false, false
	return hashInputs(map[string]string{
		"training":      fmt.Sprintf("%#v", t),
		"lora":          fmt.Sprintf("%#v", c.LoRA),
		"train_type":    c.Retrieval.TrainType,
		"train_samples": strconv.Itoa(c.Retrieval.TrainSamples),
		"seed":          strconv.FormatInt(c.Seed, 10),
	})
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
