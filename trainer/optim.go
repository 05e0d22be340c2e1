package trainer

import (
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/rella-project/rella/engine"
)

// AdamW is torch.optim.AdamW (decoupled weight decay, bias-corrected
// moments): for each element, with t the step count after increment,
//
//	p <- p * (1 - lr*wd)
//	m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g²
//	p <- p - (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
//
// Arithmetic is float64; parameters and moments are stored as float32.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	T                              int         // steps taken
	M, V                           [][]float32 // first and second moments, one slice per parameter
}

// NewAdamW returns an optimiser with zero moments shaped like params.
func NewAdamW(params []*engine.Param, beta1, beta2, eps, weightDecay float64) *AdamW {
	a := &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay}
	for _, p := range params {
		a.M = append(a.M, make([]float32, len(p.Value)))
		a.V = append(a.V, make([]float32, len(p.Value)))
	}
	return a
}

// Step applies one update with learning rate lr from each Param.Grad.
func (a *AdamW) Step(params []*engine.Param, lr float64) {
	a.T++
	bc1 := 1 - math.Pow(a.Beta1, float64(a.T))
	bc2 := math.Sqrt(1 - math.Pow(a.Beta2, float64(a.T)))
	decay := 1 - lr*a.WeightDecay
	stepSize := lr / bc1
	for i, p := range params {
		m, v := a.M[i], a.V[i]
		for j, g32 := range p.Grad {
			g := float64(g32)
			mj := a.Beta1*float64(m[j]) + (1-a.Beta1)*g
			vj := a.Beta2*float64(v[j]) + (1-a.Beta2)*g*g
			m[j], v[j] = float32(mj), float32(vj)
			w := float64(p.Value[j]) * decay
			w -= stepSize * mj / (math.Sqrt(vj)/bc2 + a.Eps)
			p.Value[j] = float32(w)
		}
	}
}

// gradNorm returns the global L2 norm of all gradients.
func gradNorm(params []*engine.Param) float64 {
	var s float64
	for _, p := range params {
		for _, g := range p.Grad {
			s += float64(g) * float64(g)
		}
	}
	return math.Sqrt(s)
}

// scaleGrads multiplies every gradient by c.
func scaleGrads(params []*engine.Param, c float64) {
	for _, p := range params {
		for j, g := range p.Grad {
			p.Grad[j] = float32(float64(g) * c)
		}
	}
}

// clipCoef is torch.nn.utils.clip_grad_norm_'s factor: min(1, max/(norm+1e-6)).
func clipCoef(norm, maxNorm float64) float64 {
	if maxNorm <= 0 {
		return 1
	}
	return min(1, maxNorm/(norm+1e-6))
}

func zeroGrads(params []*engine.Param) {
	for _, p := range params {
		clear(p.Grad)
	}
}

// EpochOrder returns the order in which epoch visits n examples: a
// Fisher-Yates shuffle driven by a PCG generator seeded with (seed, epoch),
// using Lemire's unbiased bounded draw. It is a pure function of its
// arguments, so a resumed run replays every epoch's order.
func EpochOrder(seed uint64, epoch, n int) []int {
	r := rand.NewPCG(seed, uint64(epoch))
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(bounded(r, uint64(i+1)))
		order[i], order[j] = order[j], order[i]
	}
	return order
}

// bounded returns a uniform draw from [0, n) (Lemire 2019).
func bounded(r *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(r.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.Uint64(), n)
		}
	}
	return hi
}

// DropoutSeed returns the dropout seed of micro-batch k of optimiser step s
// (0-based), a pure function of (seed, s, k).
func DropoutSeed(seed uint64, s, k int) uint64 {
	return mix(mix(mix(seed^0x9e3779b97f4a7c15)+uint64(s)) + uint64(k)<<1 | 1)
}

// mix is splitmix64's finaliser.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
