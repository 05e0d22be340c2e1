package retrieval

import (
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

// Randomized PCA (Halko, Martinsson and Tropp, 2011, algorithm 4.4: a
// Gaussian test matrix, power iterations re-orthonormalised by QR at every
// half step, then an exact eigen-decomposition of the small projected
// problem). scikit-learn's PCA, which the released code calls with
// n_components=512, also picks a randomized solver for these shapes; its
// draw is unseeded, ours is fixed, so the result is deterministic.
const (
	// randomizedIters is the number of power iterations.
	randomizedIters = 6
	// randomizedSeed seeds the Gaussian test matrix.
	randomizedSeed = 0x5eed_5b5b
	// exactMax: eigen-decompose exactly when min(items, D) is at most this
	// (gonum's EigenSym costs about 15 s at 1,024 on one core and grows
	// as the cube).
	exactMax = 768
)

// oversample is the number of extra directions the randomized solver keeps
// beyond the k wanted (k/4, at least 10).
func oversample(k int) int { return max(10, k/4) }

// useRandomized reports whether FitPCA takes the randomized path.
func useRandomized(n, d, k int) bool {
	m := min(n, d)
	return m > exactMax && m > 2*(k+oversample(k))
}

// rowOp applies the centred data matrix Xc (n x D, rows of x minus mean)
// chunk by chunk, so memory stays at one chunk of float64 rows.
type rowOp struct {
	x    [][]float32
	mean []float64
}

// mul returns Xc * b (b is D x m).
func (o rowOp) mul(b *mat.Dense) *mat.Dense {
	n, d := len(o.x), len(o.mean)
	_, m := b.Dims()
	out := mat.NewDense(n, m, nil)
	for lo := 0; lo < n; lo += pcaChunk {
		rows := min(pcaChunk, n-lo)
		chunk := mat.NewDense(rows, d, nil)
		centred(chunk, o.x, lo, o.mean)
		out.Slice(lo, lo+rows, 0, m).(*mat.Dense).Mul(chunk, b)
	}
	return out
}

// mulT returns Xc' * a (a is n x m).
func (o rowOp) mulT(a *mat.Dense) *mat.Dense {
	n, d := len(o.x), len(o.mean)
	_, m := a.Dims()
	out := mat.NewDense(d, m, nil)
	var part mat.Dense
	for lo := 0; lo < n; lo += pcaChunk {
		rows := min(pcaChunk, n-lo)
		chunk := mat.NewDense(rows, d, nil)
		centred(chunk, o.x, lo, o.mean)
		part.Reset()
		part.Mul(chunk.T(), a.Slice(lo, lo+rows, 0, m))
		out.Add(out, &part)
	}
	return out
}

// orthonormalize replaces the columns of a (r x m, r >= m) by an
// orthonormal basis of their span (thin Householder QR).
func orthonormalize(a *mat.Dense) {
	g := a.RawMatrix()
	tau := make([]float64, g.Cols)
	work := make([]float64, 1)
	lapack64.Geqrf(g, tau, work, -1)
	work = make([]float64, max(int(work[0]), g.Cols))
	lapack64.Geqrf(g, tau, work, len(work))
	lapack64.Orgqr(g, tau, work, -1)
	if int(work[0]) > len(work) {
		work = make([]float64, int(work[0]))
	}
	lapack64.Orgqr(g, tau, work, len(work))
}

func fitRandomized(x [][]float32, mean []float64, dim int) (*PCAFit, error) {
	n, d := len(x), len(mean)
	m := min(dim+oversample(dim), n, d)
	op := rowOp{x: x, mean: mean}
	rng := rand.New(rand.NewPCG(randomizedSeed, uint64(n)<<32|uint64(d)))
	omega := mat.NewDense(d, m, nil)
	raw := omega.RawMatrix().Data
	for i := range raw {
		raw[i] = rng.NormFloat64()
	}
	q := op.mul(omega) // n x m
	orthonormalize(q)
	for it := 0; it < randomizedIters; it++ {
		z := op.mulT(q) // D x m
		orthonormalize(z)
		q = op.mul(z)
		orthonormalize(q)
	}
	// B = Q' Xc (m x D) = Z'; the eigenvectors u of B B' = Z'Z give the
	// singular values s (s^2 the eigenvalues) and right vectors Z u / s.
	z := op.mulT(q)
	var bbt mat.SymDense
	bbt.SymOuterK(1/float64(n-1), z.T())
	lam, u, err := topEigen(&bbt, dim, max(n, d))
	if err != nil {
		return nil, err
	}
	k := len(lam)
	v := mat.NewDense(d, k, nil)
	v.Mul(z, u)
	for c := 0; c < k; c++ {
		s := 1 / math.Sqrt(float64(n-1)*lam[c])
		col := v.ColView(c).(*mat.VecDense)
		col.ScaleVec(s, col)
	}
	return &PCAFit{Mean: mean, Components: v, Variances: lam}, nil
}
