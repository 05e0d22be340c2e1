package cuda

import (
	"fmt"
	"math"
)

// Tolerances for comparing a kernel with its CPU reference (GPU.md).
const (
	// RTolF32 and ATolF32 hold for kernels that store float32: float32
	// rounding of sums of up to a few thousand terms stays near 1e-6 relative.
	RTolF32, ATolF32 = 1e-5, 1e-5
	// RTolHalf and ATolHalf hold for bf16/fp16 storage: bf16 keeps 8
	// significant bits (relative step 2^-8 = 3.9e-3), and a kernel rounds its
	// output once and may round an intermediate once more.
	RTolHalf, ATolHalf = 1e-2, 1e-2
)

// Mismatch describes the elements of a tensor outside tolerance.
type Mismatch struct {
	Tensor     string
	Bad, Total int     // elements outside tolerance, and all elements
	Index      int     // the first bad element
	Got, Want  float32 // its values
}

// Error says which tensor failed and where.
func (m *Mismatch) Error() string {
	return fmt.Sprintf("%s: %d of %d elements outside tolerance; first at [%d]: got %v, want %v",
		m.Tensor, m.Bad, m.Total, m.Index, m.Got, m.Want)
}

// Compare checks got against want element by element in the manner of
// llm.c: an element passes when |got-want| <= atol + rtol*|want|. NaN or Inf
// in got never passes (nor does a non-finite want), so outputs poisoned with
// NaN before a kernel reveal the elements it did not write. It also requires
// equal lengths. The error is a *Mismatch naming the tensor.
func Compare(tensor string, got, want []float32, atol, rtol float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: got %d elements, want %d", tensor, len(got), len(want))
	}
	var mm *Mismatch
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		ok := !math.IsNaN(g) && !math.IsInf(g, 0) && !math.IsNaN(w) && !math.IsInf(w, 0) &&
			math.Abs(g-w) <= atol+rtol*math.Abs(w)
		if ok {
			continue
		}
		if mm == nil {
			mm = &Mismatch{Tensor: tensor, Total: len(got), Index: i, Got: got[i], Want: want[i]}
		}
		mm.Bad++
	}
	if mm != nil {
		return mm
	}
	return nil
}

// RelErr returns ||got-want|| / ||want|| (Euclidean norms), or +Inf when the
// lengths differ or got holds a NaN or Inf.
func RelErr(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range got {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		d := g - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}
