package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestQuantizeInt8 checks absmax per row against the definition written
// out independently: the largest magnitude of each row maps to ±127, every
// value is within half a step of its dequantised value, an all-zero row
// stays zero, and non-finite input is refused.
func TestQuantizeInt8(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rows, cols := 37, 33
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(r.NormFloat64() * float64(1+i/cols))
	}
	for c := 0; c < cols; c++ {
		w[3*cols+c] = 0
	}
	w[5*cols+4] = -40 // a negative absmax
	q, err := QuantizeInt8(w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	d := q.Dequantize()
	for i := 0; i < rows; i++ {
		var amax float32
		for _, v := range w[i*cols : (i+1)*cols] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if want := float32(float64(amax) / 127); q.Scale[i] != want {
			t.Errorf("row %d: scale %v, want %v", i, q.Scale[i], want)
		}
		hit := false
		for c := 0; c < cols; c++ {
			k := i*cols + c
			if e := math.Abs(float64(d[k] - w[k])); e > 0.5*float64(q.Scale[i])*(1+1e-6) {
				t.Errorf("[%d,%d]: %v dequantises to %v (q %d), step %v", i, c, w[k], d[k], q.Q[k], q.Scale[i])
			}
			if q.Scale[i] != 0 {
				if want := int8(max(-127, min(127, math.Round(float64(w[k])/float64(q.Scale[i]))))); q.Q[k] != want {
					t.Fatalf("[%d,%d]: q %d, want %d", i, c, q.Q[k], want)
				}
			}
			if d[k] != float32(q.Q[k])*q.Scale[i] {
				t.Fatalf("[%d,%d]: Dequantize is not float32(q)*scale", i, c)
			}
			hit = hit || q.Q[k] == 127 || q.Q[k] == -127
		}
		if amax > 0 && !hit {
			t.Errorf("row %d: no value at ±127", i)
		}
	}
	if q.Q[5*cols+4] != -127 {
		t.Errorf("negative absmax quantised to %d, want -127", q.Q[5*cols+4])
	}
	for c := 0; c < cols; c++ {
		if d[3*cols+c] != 0 {
			t.Fatalf("zero row dequantises to %v", d[3*cols+c])
		}
	}
	if q.Bytes() != int64(rows*cols+4*rows) {
		t.Errorf("Bytes %d", q.Bytes())
	}
	w[2] = float32(math.Inf(1))
	if _, err := QuantizeInt8(w, rows, cols); err == nil {
		t.Error("inf accepted")
	}
	if _, err := QuantizeInt8(w[:5], rows, cols); err == nil {
		t.Error("wrong length accepted")
	}
}

func TestQuantizedNames(t *testing.T) {
	for name, want := range map[string]bool{
		"model.layers.0.self_attn.q_proj.weight":        true,
		"model.layers.31.mlp.down_proj.weight":          true,
		"model.layers.3.mlp.gate_proj.weight":           true,
		"model.layers.3.self_attn.o_proj.weight":        true,
		"model.embed_tokens.weight":                     false,
		"lm_head.weight":                                false,
		"model.layers.0.input_layernorm.weight":         false,
		"model.norm.weight":                             false,
		"model.layers.0.self_attn.q_proj.lora_A.weight": false,
	} {
		if Quantized(name) != want {
			t.Errorf("Quantized(%q) = %v, want %v", name, !want, want)
		}
	}
	for q, ok := range map[string]bool{"": true, "none": true, "int8": true, "int4": false, "INT8": false} {
		if (CheckQuantization(q) == nil) != ok {
			t.Errorf("CheckQuantization(%q) ok=%v", q, !ok)
		}
	}
}

// BenchmarkQuantizeInt8 quantises one 13B down_proj ([5120, 13824]); the
// load-time cost of model.quantize int8 is 280 of these for 13B.
func BenchmarkQuantizeInt8(b *testing.B) {
	rows, cols := 5120, 13824
	w := make([]float32, rows*cols)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.02)
	}
	b.SetBytes(int64(4 * len(w)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := QuantizeInt8(w, rows, cols); err != nil {
			b.Fatal(err)
		}
	}
}
