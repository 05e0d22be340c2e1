package cuda

import (
	"testing"

	"github.com/rella-project/rella/model"
)

func TestChunks(t *testing.T) {
	got := chunks([]int{3, 4, 2, 10, 1, 1}, 8)
	want := [][2]int{{0, 2}, {2, 3}, {3, 4}, {4, 6}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if got := chunks(nil, 8); len(got) != 0 {
		t.Errorf("no sequences: got %v", got)
	}
}

func TestWeightBytesLlama7B(t *testing.T) {
	// LLaMA-7B: 6,738,415,616 parameters (HF's count for Llama-2-7b-hf,
	// untied lm_head), 2 bytes each in bf16.
	cfg := model.Config{HiddenSize: 4096, IntermediateSize: 11008, NumHiddenLayers: 32, NumAttentionHeads: 32,
		NumKeyValueHeads: 32, HeadDim: 128, VocabSize: 32000}
	if got, want := WeightBytes(cfg, BF16), int64(6738415616*2); got != want {
		t.Errorf("got %d bytes, want %d", got, want)
	}
	if err := CheckConfig(cfg); err != nil {
		t.Errorf("7B config rejected: %v", err)
	}
	cfg.HeadDim = 256
	if CheckConfig(cfg) == nil {
		t.Errorf("head_dim 256 accepted")
	}
}

func TestParsePrecision(t *testing.T) {
	for s, want := range map[string]Elem{"bf16": BF16, "f16": F16, "f32": F32} {
		e, ok, err := ParsePrecision(s)
		if err != nil || !ok || e != want {
			t.Errorf("%q: got %v %v %v, want %v", s, e, ok, err, want)
		}
	}
	if _, ok, err := ParsePrecision(""); ok || err != nil {
		t.Errorf("empty: got ok=%v err=%v", ok, err)
	}
	if _, _, err := ParsePrecision("int8"); err == nil {
		t.Errorf("int8 accepted")
	}
}
