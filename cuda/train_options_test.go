package cuda

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rella-project/rella/engine"
	"github.com/rella-project/rella/model"
)

func testParam(name string, rows, cols int) *engine.Param {
	return &engine.Param{Name: name, Shape: []int{rows, cols}, Value: make([]float32, rows*cols), Grad: make([]float32, rows*cols)}
}

// TestParseLoRA checks the module order (first appearance of A or B, as
// cpu.DropoutMasks numbers modules), the shapes found, and the errors.
func TestParseLoRA(t *testing.T) {
	cfg := model.Config{HiddenSize: 16, IntermediateSize: 40, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 4, VocabSize: 50}
	pre := "base_model.model.model.layers."
	params := []*engine.Param{
		testParam(pre+"1.mlp.down_proj.lora_B.weight", 16, 3),
		testParam(pre+"0.self_attn.v_proj.lora_A.weight", 3, 16),
		testParam(pre+"1.mlp.down_proj.lora_A.weight", 3, 40),
		testParam(pre+"0.self_attn.v_proj.lora_B.weight", 8, 3),
	}
	specs, err := parseLoRA(cfg, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].layer != 1 || specs[0].module != "down_proj" || specs[0].in != 40 || specs[0].out != 16 ||
		specs[1].module != "v_proj" || specs[1].out != 8 || specs[1].rank != 3 || specs[0].a != params[2] || specs[1].b != params[3] {
		t.Errorf("got %+v", specs)
	}
	for _, c := range []struct {
		params []*engine.Param
		want   string
	}{
		{[]*engine.Param{testParam(pre+"0.self_attn.q_proj.lora_A.weight", 3, 16)}, "lacks"},
		{[]*engine.Param{testParam(pre+"0.self_attn.q_proj.lora_A.weight", 3, 15), testParam(pre+"0.self_attn.q_proj.lora_B.weight", 16, 3)}, "do not fit"},
		{[]*engine.Param{testParam(pre+"2.self_attn.q_proj.lora_A.weight", 3, 16)}, "names no module"},
		{[]*engine.Param{testParam(pre+"0.mlp.q_proj.lora_A.weight", 3, 16)}, "names no module"},
		{[]*engine.Param{testParam("model.layers.0.self_attn.q_proj.lora_A.weight", 3, 16)}, "not a PEFT"},
	} {
		if _, err := parseLoRA(cfg, c.params); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.params[0].Name, err, c.want)
		}
	}
}

// TestTrainWorkspaceBytes checks the estimate grows with the tokens and
// counts at least the kept layer inputs, and logs it at LLaMA-7B shape.
func TestTrainWorkspaceBytes(t *testing.T) {
	cfg := model.Config{HiddenSize: 4096, IntermediateSize: 11008, NumHiddenLayers: 32, NumAttentionHeads: 32, NumKeyValueHeads: 32,
		HeadDim: 128, VocabSize: 32000}
	var params []*engine.Param
	for l := 0; l < 32; l++ {
		for _, m := range []string{"q_proj", "v_proj"} {
			in, out, _ := moduleDims(cfg, m)
			pre := fmt.Sprintf("base_model.model.model.layers.%d.self_attn.%s.lora_", l, m)
			params = append(params, testParam(pre+"A.weight", 8, in), testParam(pre+"B.weight", out, 8))
		}
	}
	a, err := TrainWorkspaceBytes(cfg, 2048, 200, 8192, BF16, params)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := TrainWorkspaceBytes(cfg, 4096, 200, 8192, BF16, params)
	if _, err := TrainWorkspaceBytes(cfg, 2048, 200, 8192, BF16, params[:1]); err == nil {
		t.Errorf("an adapter without its B was accepted")
	}
	if !(b > a) || a < 33*2048*4096*4 {
		t.Errorf("workspace %d bytes for 2048 tokens, %d for 4096", a, b)
	}
	t.Logf("LLaMA-7B, LoRA r=8 on q,v: %.2f GiB for 2048 tokens, %.2f GiB for 4096 (plus %.2f GiB of bf16 weights)",
		float64(a)/(1<<30), float64(b)/(1<<30), float64(WeightBytes(cfg, BF16))/(1<<30))
}
