package cpu

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rella-project/rella/safetensors"
)

// TestLoRAForwardAgainstPython compares the adapted model (LoRA on
// attention and MLP projections, untied head, GQA) with the plain-Python
// float64 forward in testdata/llama_ref.py.
func TestLoRAForwardAgainstPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the independent Python reference cannot run")
	}
	m := tinyModel(t, 0.3)
	params := loraParams(m, []string{"q_proj", "v_proj", "o_proj", "down_proj"}, 3, 0.3, 0.3, 21)
	adapter := filepath.Join(t.TempDir(), "adapter_model.safetensors")
	var ts []safetensors.Tensor
	for _, p := range params {
		ts = append(ts, safetensors.F32(p.Name, p.Shape, p.Value))
	}
	if err := safetensors.Write(adapter, ts, nil); err != nil {
		t.Fatal(err)
	}
	seq := []int{1, 17, 3, 39, 22, 8, 0, 11}
	var ids []string
	for _, id := range seq {
		ids = append(ids, strconv.Itoa(id))
	}
	const scale = 2.0
	out, err := exec.Command(py, "testdata/llama_ref.py", m.Dir, adapter, fmt.Sprint(scale), strings.Join(ids, ",")).Output()
	if err != nil {
		t.Fatalf("python reference: %v", err)
	}
	var ref struct {
		Last       []float64 `json:"last"`
		MeanHidden []float64 `json:"mean_hidden"`
	}
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatal(err)
	}
	// The engine returns float32: the float64 engine can match to float32
	// rounding only (relative 6e-8 of values up to about 10).
	for dt, tol := range map[string]float64{"float64": 1e-6, "float32": 2e-5} {
		e, err := New(m, Options{DType: dt, LoRA: &LoRA{Scale: scale, Dropout: 0.5, Params: params}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		logits, err := e.LastLogits(ctx, [][]int{seq}, nil)
		if err != nil {
			t.Fatal(err)
		}
		hidden, err := e.MeanHidden(ctx, [][]int{seq})
		if err != nil {
			t.Fatal(err)
		}
		dl, dh := 0.0, 0.0
		for i, v := range ref.Last {
			dl = math.Max(dl, math.Abs(float64(logits[0][i])-v))
		}
		for i, v := range ref.MeanHidden {
			dh = math.Max(dh, math.Abs(float64(hidden[0][i])-v))
		}
		t.Logf("%s: max |diff| logits %.2g, mean hidden %.2g", dt, dl, dh)
		if dl > tol || dh > tol {
			t.Errorf("%s: logits differ by %g, mean hidden by %g from the Python reference", dt, dl, dh)
		}
	}
}
