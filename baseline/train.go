package baseline

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"gorgonia.org/tensor"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/metrics"
	"github.com/rella-project/rella/retrieval"
)

// Options are what Train needs beyond the baseline section.
type Options struct {
	Seed       int64        // parameter initialisation and epoch order
	SampleSeed int64        // the N-shot draw (data.sample_seed, as the ReiT mix)
	DType      tensor.Dtype // float32 (default) or float64
	Log        *slog.Logger
	// OnEpoch, when set, gets every epoch's record as it finishes.
	OnEpoch func(Epoch) error
}

// Epoch records one training epoch.
type Epoch struct {
	Epoch     int            `json:"epoch"` // 1-based
	Steps     int            `json:"steps"`
	TrainLoss float64        `json:"train_loss"` // mean over the epoch's batches
	Valid     metrics.Result `json:"valid"`
	Best      bool           `json:"best"` // the best validation AUC so far
	Seconds   float64        `json:"seconds"`
}

// Model is a trained baseline: its features, parameters and graph for
// prediction.
type Model struct {
	Name      string
	Config    configs.Baseline
	Features  *Features
	Params    *Params
	BestEpoch int     // the epoch whose parameters the model holds
	Epochs    []Epoch // every epoch run
	Trained   int     // training samples used (N, or the whole split)
	eval      *net
}

// Train trains cfg.Model on ds's training split (all of it, or
// cfg.TrainSamples drawn as retrieval.Mix draws the ReiT samples), picks the
// epoch with the best validation AUC (stopping after cfg.Patience epochs
// without a better one; the last epoch when there is no validation split)
// and returns the model with that epoch's parameters.
func Train(ctx context.Context, ds *data.Dataset, cfg configs.Baseline, opt Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opt.DType != tensor.Float64 {
		opt.DType = tensor.Float32
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	train, _, err := retrieval.Mix(ds.Train, cfg.TrainSamples, opt.SampleSeed, retrieval.TrainOriginal)
	if err != nil {
		return nil, fmt.Errorf("baseline.train_samples: %w", err)
	}
	if len(train) == 0 {
		return nil, fmt.Errorf("baseline: the training split is empty")
	}
	f, err := NewFeatures(ds, train, cfg.HistoryLen)
	if err != nil {
		return nil, err
	}
	p := newParams(opt.DType, opt.Seed)
	bsz := min(cfg.BatchSize, len(train))
	tn, err := newNet(cfg.Model, f, cfg, p, bsz, true)
	if err != nil {
		return nil, err
	}
	defer tn.vm.Close()
	ev, err := newNet(cfg.Model, f, cfg, p, cfg.BatchSize, false)
	if err != nil {
		return nil, err
	}
	m := &Model{Name: cfg.Model, Config: cfg, Features: f, Params: p, Trained: len(train), eval: ev}
	log.Info("baseline: training", "model", cfg.Model, "samples", len(train), "valid", len(ds.Valid),
		"parameters", p.Count(), "batch", bsz, "epochs", cfg.Epochs)

	adam := NewAdam(cfg.LearningRate, cfg.WeightDecay)
	grads := make([][]float64, len(tn.params))
	order := make([]int, len(train))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(uint64(opt.Seed), 0xba5e))
	batch := make([]data.Sample, 0, bsz)
	var best [][]float32
	bestAUC, bad := math.Inf(-1), 0
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		start := time.Now()
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		var lossSum float64
		steps := 0
		for lo := 0; lo < len(order); lo += bsz {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			batch = batch[:0]
			for _, i := range order[lo:min(lo+bsz, len(order))] {
				batch = append(batch, train[i])
			}
			loss, err := tn.step(f, p, batch, grads)
			if err != nil {
				return nil, fmt.Errorf("baseline: %s: epoch %d step %d: %w", cfg.Model, epoch, steps+1, err)
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return nil, fmt.Errorf("baseline: %s: epoch %d step %d: the loss is %g (try a smaller baseline.learning_rate)", cfg.Model, epoch, steps+1, loss)
			}
			adam.Step(tn.params, grads)
			lossSum += loss
			steps++
		}
		e := Epoch{Epoch: epoch, Steps: steps, TrainLoss: lossSum / float64(steps)}
		if len(ds.Valid) > 0 {
			pv, err := m.Predict(ctx, ds.Valid)
			if err != nil {
				return nil, err
			}
			e.Valid = metrics.Compute(labels(ds.Valid), pv)
		}
		switch {
		case len(ds.Valid) == 0 || !e.Valid.Defined():
			e.Best = true // nothing to select on: keep the latest
		case e.Valid.AUC > bestAUC:
			e.Best = true
			bestAUC = e.Valid.AUC
		}
		if e.Best {
			best, bad, m.BestEpoch = p.snapshot(), 0, epoch
		} else {
			bad++
		}
		e.Seconds = time.Since(start).Seconds()
		m.Epochs = append(m.Epochs, e)
		log.Info("baseline: epoch", "model", cfg.Model, "epoch", epoch, "train_loss", round4(e.TrainLoss),
			"valid_auc", round4(e.Valid.AUC), "valid_logloss", round4(e.Valid.LogLoss), "best", e.Best, "seconds", round4(e.Seconds))
		if opt.OnEpoch != nil {
			if err := opt.OnEpoch(e); err != nil {
				return nil, err
			}
		}
		if bad >= cfg.Patience {
			log.Info("baseline: early stop", "model", cfg.Model, "epoch", epoch, "best_epoch", m.BestEpoch)
			break
		}
	}
	p.restore(best)
	return m, nil
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

func labels(s []data.Sample) []int {
	out := make([]int, len(s))
	for i, x := range s {
		out[i] = int(x.Label)
	}
	return out
}

// prepare fills the batch and the graph's derived inputs.
func (n *net) prepare(f *Features, p *Params, samples []data.Sample) error {
	if err := f.Fill(n.bt, samples); err != nil {
		return err
	}
	n.fillPositions()
	n.fillMean()
	n.retrieve(f, p)
	return nil
}

// step runs one training batch and leaves each parameter's gradient in
// grads; it returns the loss.
func (n *net) step(f *Features, p *Params, samples []data.Sample, grads [][]float64) (float64, error) {
	if err := n.prepare(f, p, samples); err != nil {
		return 0, err
	}
	defer n.vm.Reset()
	if err := n.vm.RunAll(); err != nil {
		return 0, err
	}
	for i, g := range n.grads {
		v := g.Value()
		if v == nil {
			return 0, fmt.Errorf("no gradient for %s", n.params[i].Name)
		}
		switch d := v.Data().(type) {
		case []float32:
			if len(grads[i]) != len(d) {
				grads[i] = make([]float64, len(d))
			}
			for j, x := range d {
				grads[i][j] = float64(x)
			}
		case []float64:
			grads[i] = append(grads[i][:0], d...)
		default:
			return 0, fmt.Errorf("gradient of %s is %T", n.params[i].Name, d)
		}
	}
	return scalarOf(n.loss.Value().Data()), nil
}

func scalarOf(v any) float64 {
	switch x := v.(type) {
	case float32:
		return float64(x)
	case float64:
		return x
	case []float32:
		return float64(x[0])
	case []float64:
		return x[0]
	}
	return math.NaN()
}

// Predict returns the click probability of every sample.
func (m *Model) Predict(ctx context.Context, samples []data.Sample) ([]float64, error) {
	n := m.eval
	out := make([]float64, 0, len(samples))
	for lo := 0; lo < len(samples); lo += n.bt.B {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := samples[lo:min(lo+n.bt.B, len(samples))]
		if err := n.prepare(m.Features, m.Params, chunk); err != nil {
			return nil, err
		}
		if err := n.vm.RunAll(); err != nil {
			n.vm.Reset()
			return nil, fmt.Errorf("baseline: %s: predict: %w", m.Name, err)
		}
		switch d := n.logits.Value().Data().(type) {
		case []float32:
			for _, z := range d[:len(chunk)] {
				out = append(out, sigmoid(float64(z)))
			}
		case []float64:
			for _, z := range d[:len(chunk)] {
				out = append(out, sigmoid(z))
			}
		}
		n.vm.Reset()
	}
	return out, nil
}

// Close releases the model's graph.
func (m *Model) Close() error { return m.eval.vm.Close() }

// DisplayName is the model's name as the paper writes it.
func DisplayName(model string) string {
	switch model {
	case "deepfm":
		return "DeepFM"
	case "dcnv2":
		return "DCNv2"
	case "din":
		return "DIN"
	case "sim":
		return "SIM"
	case "sasrec":
		return "SASRec"
	}
	return model
}
