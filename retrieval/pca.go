package retrieval

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// PCAFit is a principal component analysis fitted on a set of row vectors.
type PCAFit struct {
	// Mean is the column mean of the fitted rows (length D).
	Mean []float64
	// Components holds the principal axes as orthonormal columns (D x k),
	// ordered by decreasing variance. The sign of each column is fixed so
	// that its entry of largest magnitude (the first one on ties) is positive.
	Components *mat.Dense
	// Variances are the variances of the rows along each component
	// (eigenvalues of the covariance with denominator n-1), descending.
	Variances []float64
}

// pcaChunk is the number of rows converted to float64 at a time.
const pcaChunk = 1024

// rankTol is the relative size below which an eigenvalue of the covariance
// counts as zero: lambda <= rankTol * max(n, D) * lambda_max.
const rankTol = 1e-12

// PCA reduces the item vectors x (items x D) to at most dim principal
// components fitted on all of x, then scales every row to unit length so
// that dot products are cosine similarities (RELLA.md 4.3). Rows that
// project to zero stay zero.
//
// The output dimension is min(dim, r), where r is the numeric rank of the
// centred matrix (at most min(items-1, D)): directions with no variance carry
// no information and are dropped rather than filled with arbitrary axes.
func PCA(x [][]float32, dim int) ([][]float32, error) {
	fit, err := FitPCA(x, dim)
	if err != nil {
		return nil, err
	}
	y, err := fit.Transform(x)
	if err != nil {
		return nil, err
	}
	for _, row := range y {
		normalize(row)
	}
	return y, nil
}

// FitPCA fits a PCA with at most dim components (see PCA for the cap) on the
// rows of x, which must all have the same length and be finite.
//
// Small problems (min(items, D) <= 768, or not much above dim) are solved
// exactly: with at least as many dimensions as rows it eigen-decomposes the
// n x n Gram matrix of the centred rows, otherwise the D x D covariance
// accumulated in chunks of rows. Larger ones (ML-1M's 3,706 x 4,096 and up)
// use a seeded randomized solver (see pca_randomized.go), as scikit-learn's
// PCA does for such shapes; its components agree with the exact ones to
// many digits wherever the spectrum has a gap, and memory stays at one
// chunk of float64 rows plus O((items + D) x dim).
func FitPCA(x [][]float32, dim int) (*PCAFit, error) {
	n, d, err := checkRows(x)
	if err != nil {
		return nil, fmt.Errorf("pca: %w", err)
	}
	m := methodGram
	switch {
	case useRandomized(n, d, dim):
		m = methodRandomized
	case n > d:
		m = methodCovariance
	}
	return fitPCA(x, n, d, dim, m)
}

// PCA solvers.
const (
	methodGram = iota
	methodCovariance
	methodRandomized
)

func checkRows(x [][]float32) (n, d int, err error) {
	n = len(x)
	if n < 2 {
		return 0, 0, fmt.Errorf("need at least 2 rows, got %d", n)
	}
	d = len(x[0])
	if d == 0 {
		return 0, 0, errors.New("rows are empty")
	}
	for i, row := range x {
		if len(row) != d {
			return 0, 0, fmt.Errorf("row %d has length %d, want %d", i, len(row), d)
		}
		for j, v := range row {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return 0, 0, fmt.Errorf("row %d column %d is not finite (%v)", i, j, v)
			}
		}
	}
	return n, d, nil
}

func fitPCA(x [][]float32, n, d, dim int, method int) (*PCAFit, error) {
	if dim <= 0 {
		return nil, fmt.Errorf("pca: dimension must be positive, got %d", dim)
	}
	mean := make([]float64, d)
	for _, row := range x {
		for j, v := range row {
			mean[j] += float64(v)
		}
	}
	for j := range mean {
		mean[j] /= float64(n)
	}
	var (
		fit *PCAFit
		err error
	)
	switch method {
	case methodGram:
		fit, err = fitGram(x, mean, dim)
	case methodCovariance:
		fit, err = fitCovariance(x, mean, dim)
	default:
		fit, err = fitRandomized(x, mean, dim)
	}
	if err != nil {
		return nil, err
	}
	fixSigns(fit.Components)
	return fit, nil
}

// centred fills dst (rows x D) with x[lo:lo+rows] minus mean.
func centred(dst *mat.Dense, x [][]float32, lo int, mean []float64) {
	rows, _ := dst.Dims()
	raw := dst.RawMatrix()
	for i := 0; i < rows; i++ {
		out := raw.Data[i*raw.Stride : i*raw.Stride+len(mean)]
		for j, v := range x[lo+i] {
			out[j] = float64(v) - mean[j]
		}
	}
}

// topEigen factorises s and returns its eigenvalues and eigenvectors in
// decreasing order, keeping at most dim of those above the rank tolerance.
func topEigen(s *mat.SymDense, dim, scale int) ([]float64, *mat.Dense, error) {
	var eig mat.EigenSym
	if !eig.Factorize(s, true) {
		return nil, nil, errors.New("pca: eigen-decomposition did not converge")
	}
	vals := eig.Values(nil) // ascending
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	m := len(vals)
	top := vals[m-1]
	tol := rankTol * float64(scale) * top
	k := 0
	for k < dim && k < m && vals[m-1-k] > tol && vals[m-1-k] > 0 {
		k++
	}
	if k == 0 {
		return nil, nil, errors.New("pca: the rows have no variance")
	}
	out := mat.NewDense(m, k, nil)
	lam := make([]float64, k)
	for c := 0; c < k; c++ {
		lam[c] = vals[m-1-c]
		for r := 0; r < m; r++ {
			out.Set(r, c, vecs.At(r, m-1-c))
		}
	}
	return lam, out, nil
}

func fitCovariance(x [][]float32, mean []float64, dim int) (*PCAFit, error) {
	n, d := len(x), len(mean)
	cov := mat.NewSymDense(d, nil)
	for lo := 0; lo < n; lo += pcaChunk {
		rows := min(pcaChunk, n-lo)
		chunk := mat.NewDense(rows, d, nil)
		centred(chunk, x, lo, mean)
		cov.SymRankK(cov, 1/float64(n-1), chunk.T())
	}
	lam, vecs, err := topEigen(cov, dim, max(n, d))
	if err != nil {
		return nil, err
	}
	return &PCAFit{Mean: mean, Components: vecs, Variances: lam}, nil
}

func fitGram(x [][]float32, mean []float64, dim int) (*PCAFit, error) {
	n, d := len(x), len(mean)
	xc := mat.NewDense(n, d, nil)
	centred(xc, x, 0, mean)
	var g mat.SymDense
	g.SymOuterK(1/float64(n-1), xc)
	// The non-zero eigenvalues of Xc Xc'/(n-1) are those of the covariance
	// Xc'Xc/(n-1); an eigenvector u gives the axis v = Xc'u / sqrt((n-1) lambda).
	lam, u, err := topEigen(&g, dim, max(n, d))
	if err != nil {
		return nil, err
	}
	k := len(lam)
	v := mat.NewDense(d, k, nil)
	v.Mul(xc.T(), u)
	for c := 0; c < k; c++ {
		s := 1 / math.Sqrt(float64(n-1)*lam[c])
		for r := 0; r < d; r++ {
			v.Set(r, c, v.At(r, c)*s)
		}
	}
	return &PCAFit{Mean: mean, Components: v, Variances: lam}, nil
}

// fixSigns flips every column so that its entry of largest magnitude (the
// first one on ties) is positive.
func fixSigns(v *mat.Dense) {
	r, c := v.Dims()
	for j := 0; j < c; j++ {
		best, at := -1.0, 0
		for i := 0; i < r; i++ {
			if a := math.Abs(v.At(i, j)); a > best {
				best, at = a, i
			}
		}
		if v.At(at, j) < 0 {
			for i := 0; i < r; i++ {
				v.Set(i, j, -v.At(i, j))
			}
		}
	}
}

// Dim returns the number of components.
func (f *PCAFit) Dim() int { return len(f.Variances) }

// Transform projects the rows of x (same D as the fit) onto the components:
// (x - Mean) * Components, rows x k.
func (f *PCAFit) Transform(x [][]float32) ([][]float32, error) {
	d, k := f.Components.Dims()
	for i, row := range x {
		if len(row) != d {
			return nil, fmt.Errorf("pca: transform: row %d has length %d, want %d", i, len(row), d)
		}
	}
	out := make([][]float32, len(x))
	flat := make([]float32, len(x)*k)
	var y mat.Dense
	for lo := 0; lo < len(x); lo += pcaChunk {
		rows := min(pcaChunk, len(x)-lo)
		chunk := mat.NewDense(rows, d, nil)
		centred(chunk, x, lo, f.Mean)
		y.Reset()
		y.Mul(chunk, f.Components)
		for i := 0; i < rows; i++ {
			row := flat[(lo+i)*k : (lo+i+1)*k : (lo+i+1)*k]
			for j := range row {
				row[j] = float32(y.At(i, j))
			}
			out[lo+i] = row
		}
	}
	return out, nil
}

// normalize scales v to unit Euclidean length in place; a zero vector stays zero.
func normalize(v []float32) {
	var s float64
	for _, a := range v {
		s += float64(a) * float64(a)
	}
	if s == 0 {
		return
	}
	inv := 1 / math.Sqrt(s)
	for i, a := range v {
		v[i] = float32(float64(a) * inv)
	}
}
