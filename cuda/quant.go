package cuda

import "github.com/rella-project/rella/model"

// DequantInt8Ref is dequant_int8's reference: float32(q[r,c]) * scale[r]
// (one float32 multiplication, as model.Int8.Dequantize), rounded to e.
func DequantInt8Ref(q []int8, scale []float32, rows, cols int, e Elem) []float32 {
	out := make([]float32, rows*cols)
	for r := 0; r < rows; r++ {
		s := scale[r]
		for c := 0; c < cols; c++ {
			out[r*cols+c] = float32(q[r*cols+c]) * s
		}
	}
	return e.Round(out)
}

// int8Bytes is the int8 matrix of q as raw bytes (two's complement).
func int8Bytes(q []int8) []byte {
	b := make([]byte, len(q))
	for i, v := range q {
		b[i] = byte(v)
	}
	return b
}

// QuantizedWeightBytes is the device memory of cfg's weights with the
// seven projections of every layer as int8 plus a float32 scale per output
// row (model.quantize int8) and everything else in e; quantize "" is
// WeightBytes.
func QuantizedWeightBytes(cfg model.Config, e Elem, quantize string) int64 {
	if quantize != model.QuantInt8 {
		return WeightBytes(cfg, e)
	}
	d, q, kv, ff := int64(cfg.HiddenSize), int64(cfg.QDim()), int64(cfg.KVDim()), int64(cfg.IntermediateSize)
	es := int64(e.Size())
	proj := d*q + 2*d*kv + q*d + 3*d*ff // int8 values
	rows := q + 2*kv + d + 2*ff + d     // output rows: q, k, v, o, gate, up, down
	perLayer := 2*d*es + proj + 4*rows
	n := int64(cfg.NumHiddenLayers)*perLayer + (int64(cfg.VocabSize)*d+d)*es
	if !cfg.TieWordEmbeddings {
		n += int64(cfg.VocabSize) * d * es
	}
	return n + DequantBufferBytes(cfg, e, quantize)
}

// DequantBufferBytes is the one storage-type buffer the int8 projections
// are dequantised into before their GEMMs (the largest projection), 0
// without quantisation.
func DequantBufferBytes(cfg model.Config, e Elem, quantize string) int64 {
	if quantize != model.QuantInt8 {
		return 0
	}
	d, q, kv, ff := int64(cfg.HiddenSize), int64(cfg.QDim()), int64(cfg.KVDim()), int64(cfg.IntermediateSize)
	return max(d*q, d*kv, d*ff) * int64(e.Size())
}

// quantWeight is one int8 projection on a backend: values (kByte) and
// per-row scales (kFloat) of a [rows, cols] weight.
type quantWeight[B any] struct {
	q, scale   B
	rows, cols int
}

// weight returns the GEMM operand of layer l's module: w itself, or, when
// the base weights are int8, the module's weight dequantised into the
// stepper's shared buffer (valid until the next call).
func (s *stepper[B]) weight(l int, module string, w B) (B, error) {
	if s.quant == nil {
		return w, nil
	}
	qw, ok := s.quant[l][module]
	if !ok {
		return w, nil
	}
	return s.deq, s.be.dequant(s.deq, qw.q, qw.scale, qw.rows, qw.cols)
}
