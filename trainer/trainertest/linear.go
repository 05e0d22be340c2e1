// Package trainertest holds test support for package trainer and for the
// engines it drives: a tiny engine.Trainer with a hand-derived gradient
// (Linear), a synthetic yes/no data set, and ResumeExact, the check that an
// interrupted and resumed run ends bit-for-bit where an uninterrupted one
// does, reusable with any engine factory.
package trainertest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/lora"
)

// Linear is a one-layer "language model" with a LoRA adapter on its output
// projection: at position t, with h = Emb[token_t] (Dim values),
//
//	logits = W0 h + Scale * B (A (mask ⊙ h) / (1-Dropout))
//
// with W0 [Vocab, Dim] frozen, A [R, Dim], B [Vocab, R] trainable and mask
// a Bernoulli(1-Dropout) draw per (example, position, feature) from the
// dropout seed. LossGrad is summed cross-entropy with the gradient derived
// by hand (see LossGrad); it is checked against finite differences.
type Linear struct {
	Vocab, Dim, R int
	Scale         float64
	Dropout       float64
	W0, Emb       []float64
	params        []*engine.Param
}

// NewLinear builds a Linear model whose frozen weights and adapter A are
// drawn from seed (B starts at zero, as LoRA's does).
func NewLinear(vocab, dim int, o lora.Options, seed uint64) *Linear {
	r := rand.New(rand.NewPCG(seed, 1))
	m := &Linear{Vocab: vocab, Dim: dim, R: o.R, Scale: o.Scale(), Dropout: o.Dropout,
		W0: make([]float64, vocab*dim), Emb: make([]float64, vocab*dim)}
	for i := range m.W0 {
		m.W0[i] = 0.3 * r.NormFloat64()
		m.Emb[i] = r.NormFloat64()
	}
	m.params = lora.Init(o, []lora.Target{{Module: "model.layers.0.self_attn.q_proj", In: dim, Out: vocab}}, int64(seed))
	// A nonzero B makes every gradient component nonzero from the first step.
	for i := range m.params[1].Value {
		m.params[1].Value[i] = float32(0.01 * r.NormFloat64())
	}
	return m
}

// Params returns [A, B].
func (m *Linear) Params() []*engine.Param { return m.params }

// Close does nothing.
func (m *Linear) Close() error { return nil }

func (m *Linear) a() []float32 { return m.params[0].Value }
func (m *Linear) b() []float32 { return m.params[1].Value }

// forward returns the logits for hidden h (dropout mask u already applied
// and scaled; nil u means no dropout) and the adapter activation a = A u.
func (m *Linear) forward(h, u []float64) (logits, act []float64) {
	if u == nil {
		u = h
	}
	act = make([]float64, m.R)
	A, B := m.a(), m.b()
	for r := 0; r < m.R; r++ {
		for d := 0; d < m.Dim; d++ {
			act[r] += float64(A[r*m.Dim+d]) * u[d]
		}
	}
	logits = make([]float64, m.Vocab)
	for v := 0; v < m.Vocab; v++ {
		z := 0.0
		for d := 0; d < m.Dim; d++ {
			z += m.W0[v*m.Dim+d] * h[d]
		}
		for r := 0; r < m.R; r++ {
			z += m.Scale * float64(B[v*m.R+r]) * act[r]
		}
		logits[v] = z
	}
	return logits, act
}

func (m *Linear) hidden(tok int) ([]float64, error) {
	if tok < 0 || tok >= m.Vocab {
		return nil, fmt.Errorf("trainertest: token %d outside vocabulary of %d", tok, m.Vocab)
	}
	return m.Emb[tok*m.Dim : (tok+1)*m.Dim], nil
}

// LossGrad adds the gradient of the summed cross-entropy to A.Grad and
// B.Grad. With p = softmax(logits), dz = p - onehot(y):
//
//	dB[v,r] = Scale * dz[v] * a[r]
//	dA[r,d] = Scale * (sum_v B[v,r] dz[v]) * u[d]
func (m *Linear) LossGrad(ctx context.Context, batch []engine.Example, dropoutSeed uint64) (float64, int, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	rng := rand.New(rand.NewPCG(dropoutSeed, 2))
	A, B := m.a(), m.b()
	gA := make([]float64, len(A))
	gB := make([]float64, len(B))
	var loss float64
	n := 0
	u := make([]float64, m.Dim)
	for _, ex := range batch {
		if len(ex.Labels) != len(ex.Tokens) {
			return 0, 0, fmt.Errorf("trainertest: %d labels for %d tokens", len(ex.Labels), len(ex.Tokens))
		}
		for t, tok := range ex.Tokens {
			h, err := m.hidden(tok)
			if err != nil {
				return 0, 0, err
			}
			for d := range u { // dropout draws for every position, labelled or not
				u[d] = h[d]
				if m.Dropout > 0 {
					if rng.Float64() < m.Dropout {
						u[d] = 0
					} else {
						u[d] /= 1 - m.Dropout
					}
				}
			}
			y := ex.Labels[t]
			if y == engine.IgnoreIndex {
				continue
			}
			logits, act := m.forward(h, u)
			p, lse := softmax(logits)
			loss += lse - logits[y]
			n++
			p[y]--
			for r := 0; r < m.R; r++ {
				da := 0.0
				for v := 0; v < m.Vocab; v++ {
					gB[v*m.R+r] += m.Scale * p[v] * act[r]
					da += float64(B[v*m.R+r]) * p[v]
				}
				da *= m.Scale
				for d := 0; d < m.Dim; d++ {
					gA[r*m.Dim+d] += da * u[d]
				}
			}
		}
	}
	for i, g := range gA {
		m.params[0].Grad[i] = float32(float64(m.params[0].Grad[i]) + g)
	}
	for i, g := range gB {
		m.params[1].Grad[i] = float32(float64(m.params[1].Grad[i]) + g)
	}
	return loss, n, nil
}

// LastLogits returns the logits at each sequence's last token (no dropout).
func (m *Linear) LastLogits(ctx context.Context, seqs [][]int, rows []int) ([][]float32, error) {
	out := make([][]float32, len(seqs))
	for i, s := range seqs {
		if len(s) == 0 {
			return nil, fmt.Errorf("trainertest: sequence %d is empty", i)
		}
		h, err := m.hidden(s[len(s)-1])
		if err != nil {
			return nil, err
		}
		logits, _ := m.forward(h, nil)
		if rows == nil {
			rows = make([]int, m.Vocab)
			for v := range rows {
				rows[v] = v
			}
		}
		out[i] = make([]float32, len(rows))
		for j, r := range rows {
			out[i][j] = float32(logits[r])
		}
	}
	return out, nil
}

// MeanHidden returns the mean embedding of each sequence.
func (m *Linear) MeanHidden(ctx context.Context, seqs [][]int) ([][]float32, error) {
	out := make([][]float32, len(seqs))
	for i, s := range seqs {
		acc := make([]float64, m.Dim)
		for _, tok := range s {
			h, err := m.hidden(tok)
			if err != nil {
				return nil, err
			}
			for d := range acc {
				acc[d] += h[d]
			}
		}
		out[i] = make([]float32, m.Dim)
		for d := range acc {
			out[i][d] = float32(acc[d] / float64(max(1, len(s))))
		}
	}
	return out, nil
}

// Loss returns the summed cross-entropy of batch with the dropout of
// dropoutSeed, without touching gradients (for finite differences).
func (m *Linear) Loss(batch []engine.Example, dropoutSeed uint64) float64 {
	saved := [][]float32{append([]float32(nil), m.params[0].Grad...), append([]float32(nil), m.params[1].Grad...)}
	l, _, _ := m.LossGrad(context.Background(), batch, dropoutSeed)
	copy(m.params[0].Grad, saved[0])
	copy(m.params[1].Grad, saved[1])
	return l
}

func softmax(z []float64) (p []float64, lse float64) {
	mx := math.Inf(-1)
	for _, v := range z {
		mx = max(mx, v)
	}
	var s float64
	p = make([]float64, len(z))
	for i, v := range z {
		p[i] = math.Exp(v - mx)
		s += p[i]
	}
	for i := range p {
		p[i] /= s
	}
	return p, mx + math.Log(s)
}

// Token ids of the synthetic task.
const (
	No  = 0
	Yes = 1
	Dot = 2
)

// Data returns n synthetic yes/no examples over a vocabulary of vocab
// tokens: random prompt tokens >= 3, then the answer (Yes when the last
// prompt token is divisible by 3, else No), labelled at the last prompt
// position; every other example also labels a following "." so that
// windows hold different numbers of labelled tokens. prompts are the
// prompt tokens and labels the answers (1 = Yes) for evaluation.
func Data(n, vocab int, seed uint64) (ex []engine.Example, prompts [][]int, labels []int) {
	r := rand.New(rand.NewPCG(seed, 3))
	for i := 0; i < n; i++ {
		k := 2 + r.IntN(6)
		toks := make([]int, k)
		for j := range toks {
			toks[j] = 3 + r.IntN(vocab-3)
		}
		y := No
		if toks[k-1]%3 == 0 {
			y = Yes
		}
		prompts = append(prompts, append([]int(nil), toks...))
		labs := make([]int, k)
		for j := range labs {
			labs[j] = engine.IgnoreIndex
		}
		labs[k-1] = y
		if i%2 == 1 {
			toks = append(toks, y)
			labs = append(labs, Dot)
		}
		ex = append(ex, engine.Example{Tokens: toks, Labels: labs})
		labels = append(labels, y)
	}
	return ex, prompts, labels
}
