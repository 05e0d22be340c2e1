package model

import (
	"fmt"
	"math"
	"regexp"
	"runtime"
	"sync"
)

// Quantization names the base-weight quantisation of config key
// model.quantize: "" (none, the default) or "int8".
const (
	QuantNone = ""
	QuantInt8 = "int8"
)

// CheckQuantization reports an unknown model.quantize value.
func CheckQuantization(q string) error {
	switch q {
	case QuantNone, "none", QuantInt8:
		return nil
	}
	return fmt.Errorf("model.quantize: %q is not one of int8, none", q)
}

var quantizedName = regexp.MustCompile(`^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$`)

// Quantized reports whether the tensor name is one of the frozen linear
// weights that model.quantize: int8 stores as int8 (the seven projections
// of every decoder layer). The embedding, the norms, the LM head and LoRA
// adapters stay in the storage type.
func Quantized(name string) bool { return quantizedName.MatchString(name) }

// Int8 is a [Rows, Cols] weight ([out, in], as HF stores projections)
// quantised per output row (absmax): Scale[r] = max_c |W[r,c]| / 127 (as
// float32) and Q[r,c] = round(W[r,c] / Scale[r]) (half away from zero,
// float64 division), in [-127, 127]. The value it stands for is
// float32(Q[r,c]) * Scale[r], computed in float32 — the GPU's dequantise
// kernel does the same multiplication before rounding to the GEMM's
// operand type, so the CPU reference and the GPU share quantisation and
// scales.
type Int8 struct {
	Rows, Cols int
	Q          []int8
	Scale      []float32
}

// QuantizeInt8 quantises the row-major [rows, cols] matrix w.
func QuantizeInt8(w []float32, rows, cols int) (*Int8, error) {
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return nil, fmt.Errorf("model: quantize: %d values for a [%d, %d] matrix", len(w), rows, cols)
	}
	q := &Int8{Rows: rows, Cols: cols, Q: make([]int8, len(w)), Scale: make([]float32, rows)}
	// Rows are independent: quantise them in parallel (a 13B checkpoint
	// has 12.7e9 projection weights); the result does not depend on the split.
	workers := min(runtime.GOMAXPROCS(0), rows)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for r := k * rows / workers; r < (k+1)*rows/workers; r++ {
				if err := q.quantizeRow(w[r*cols:(r+1)*cols], r); err != nil {
					errs[k] = err
					return
				}
			}
		}(k)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return q, nil
}

// quantizeRow fills row r of q from the weights of that row.
func (q *Int8) quantizeRow(row []float32, r int) error {
	var amax float64
	for c, v := range row {
		a := math.Abs(float64(v))
		if math.IsNaN(a) || math.IsInf(a, 0) {
			return fmt.Errorf("model: quantize: value [%d, %d] is %v", r, c, v)
		}
		amax = max(amax, a)
	}
	s := float32(amax / 127)
	q.Scale[r] = s
	if s == 0 {
		return nil // an all-zero row stays zero
	}
	out := q.Q[r*q.Cols : (r+1)*q.Cols]
	d := float64(s)
	for c, v := range row {
		out[c] = int8(max(-127, min(127, math.Round(float64(v)/d))))
	}
	return nil
}

// Dequantize returns the float32 values q stands for: float32(Q)*Scale.
func (q *Int8) Dequantize() []float32 {
	out := make([]float32, len(q.Q))
	for r := 0; r < q.Rows; r++ {
		s := q.Scale[r]
		for c, v := range q.Q[r*q.Cols : (r+1)*q.Cols] {
			out[r*q.Cols+c] = float32(v) * s
		}
	}
	return out
}

// Bytes is the memory q takes: one byte per weight and a float32 per row.
func (q *Int8) Bytes() int64 { return int64(len(q.Q)) + 4*int64(len(q.Scale)) }

// QuantizedTensor reads the tensor name and quantises it (int8, per output
// row): the load-time quantisation the engines share.
func (m *Model) QuantizedTensor(name string) (*Int8, error) {
	if !Quantized(name) {
		return nil, fmt.Errorf("model: %s is not a quantised projection weight", name)
	}
	v, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	s := m.Shape(name)
	if len(s) != 2 {
		return nil, fmt.Errorf("model: %s has shape %v, want 2 dimensions", name, s)
	}
	q, err := QuantizeInt8(v, s[0], s[1])
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", name, err)
	}
	return q, nil
}
