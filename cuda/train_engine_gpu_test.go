//go:build rellagpu

package cuda

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

// TestTrainerStoriesOnDevice runs LossGrad of the GPU Trainer on
// stories260K with the cases of TestStepperMatchesLossGradRef (LoRA on
// every projection of layers 0, 2 and 4, dropout 0.1, five packed
// examples, one unlabelled, passes of at most 100 tokens, vocabulary
// chunks of 200) against LossGradRef (tied to Gorgonia float64 in
// cpucheck). f32: loss to 1e-5 nats per token, every LoRA gradient tensor
// to 1e-4 relative. The device's half type, on natural text: loss to 0.02
// nats per token, all gradients together to 0.1 relative with cosine
// ≥ 0.99 (the host emulation of the same bf16 roundings reaches 2.5e-2 and
// 0.9997; see TestStepperMatchesLossGradRef for why a per-tensor 2e-2 cannot
// hold on this model). It also checks Trainer.LastLogits with the adapters
// against the host backend's forward pass in f32.
func TestTrainerStoriesOnDevice(t *testing.T) {
	if _, err := DeviceCount(); err != nil {
		skipOrFail(t, err)
	}
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config
	const scale, p = 2.0, 0.1
	for _, c := range []struct {
		prec    string
		natural bool
	}{{"f32", false}, {"f32", true}, {"", true}} {
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		bStd := 0.1
		if c.natural {
			bStd = 0.02
		}
		params, batch := stepCase(cfg, r, c.natural, bStd)
		seed := r.Uint64()
		tr, err := NewTrainer(m, TrainOptions{Options: Options{Precision: c.prec, MaxTokens: 100}, Scale: scale, Dropout: p,
			Params: params, VocabChunk: 200}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e := tr.Elem()
		lossSum, nTok, err := tr.LossGrad(context.Background(), batch, seed)
		if err != nil {
			tr.Close()
			t.Fatalf("%v: %v", e, err)
		}
		var logits [][]float32
		if e == F32 {
			seqs := make([][]int, len(batch))
			for i, ex := range batch {
				seqs[i] = ex.Tokens
			}
			if logits, err = tr.LastLogits(context.Background(), seqs, nil); err != nil {
				tr.Close()
				t.Fatal(err)
			}
			hs := hostStepper(t, m, F32, params, scale, p, 1000, 512)
			if err := hs.uploadAdapters(false); err != nil {
				t.Fatal(err)
			}
			D, V := cfg.HiddenSize, cfg.VocabSize
			want, _, err := hs.forward(seqs, func(x, cu *hostBuf, n, nb int) ([]float32, int, error) {
				last := GatherLastRef(x.f[:n*D], cu.i[:nb+1], D)
				all := make([]int, V)
				for i := range all {
					all[i] = i
				}
				return LMHeadRowsRef(RMSNormRef(last, hs.norm.f, nb, D, cfg.RMSNormEps), hs.head.f, all, D), V, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range seqs {
				if rel := RelErr(logits[i], want[i*V:(i+1)*V]); !(rel <= 1e-4) {
					t.Errorf("f32: LastLogits with adapters, sequence %d: relative error %.3g against the host forward", i, rel)
				}
			}
		}
		tr.Close()
		specs, ref := stepRef(t, m, F32, params, batch, scale, p, seed)
		worst, global, cosine := gradStats(specs, ref)
		name := fmt.Sprintf("%v natural=%v", e, c.natural)
		t.Logf("%s: loss %.5f (reference %.5f) over %d tokens; LoRA gradients: worst tensor %.2e, all %.2e, cosine %.7f",
			name, lossSum, ref.LossSum, nTok, worst, global, cosine)
		lossTol, worstTol, globalTol, cosTol := 1e-5, 1e-4, 1e-4, 1-1e-8
		if e != F32 {
			lossTol, worstTol, globalTol, cosTol = 0.02, math.Inf(1), 0.1, 0.99
		}
		if nTok != ref.Tokens || !(math.Abs(lossSum-ref.LossSum) <= lossTol*float64(nTok)) {
			t.Errorf("%s: loss %v over %d tokens, reference %v over %d", name, lossSum, nTok, ref.LossSum, ref.Tokens)
		}
		if !(worst <= worstTol && global <= globalTol && cosine >= cosTol) {
			t.Errorf("%s: gradients: worst tensor %.3g (bound %g), all %.3g (bound %g), cosine %.7f (bound %g)",
				name, worst, worstTol, global, globalTol, cosine, cosTol)
		}
	}
}
