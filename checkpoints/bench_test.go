package checkpoints

import (
	"testing"

	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/safetensors"
)

// BenchmarkSave7B saves a checkpoint of Vicuna-7B's ReLLa adapter (rank 8 on
// q_proj and v_proj of 32 layers: 4.2M values, 16.8 MB) with its two AdamW
// moments, then verifies it, as Latest does.
func BenchmarkSave7B(b *testing.B) {
	o := lora.DefaultOptions()
	ts, err := lora.Targets(o, 32, 4096, 32, 32, 128, 11008)
	if err != nil {
		b.Fatal(err)
	}
	ps := lora.Init(o, ts, 1)
	var tensors []safetensors.Tensor
	for _, p := range ps {
		tensors = append(tensors, safetensors.F32("adamw.exp_avg."+p.Name, p.Shape, p.Value),
			safetensors.F32("adamw.exp_avg_sq."+p.Name, p.Shape, p.Value))
	}
	root := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir, err := Save(root, Contents{Step: i + 1, LoRA: o, BaseModel: "lmsys/vicuna-7b-v1.5", Params: ps, Tensors: tensors, State: map[string]int{"step": i}})
		if err != nil {
			b.Fatal(err)
		}
		if err := Verify(dir); err != nil {
			b.Fatal(err)
		}
		if err := Prune(root, 1, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}
