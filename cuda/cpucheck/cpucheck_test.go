// Package cpucheck_test ties cuda.ForwardRef (the composition of the kernel
// references that the GPU engine is checked against) to the project's CPU
// engine, the reference of GPU.md. It lives apart from package cuda so that
// cuda's test binary, carried to the GPU machine, does not link Gorgonia.
package cpucheck_test

import (
	"context"
	"testing"

	"github.com/rella-project/rella/cpu"
	"github.com/rella-project/rella/cuda"
	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

// TestForwardRefMatchesCPUEngine runs stories260K through cuda.ForwardRef
// and through cpu.Engine in float64, packed sequences against the CPU
// engine's padded batches: last-position logits (all rows and two chosen
// rows) and mean final-norm hidden states must agree to 1e-5.
func TestForwardRefMatchesCPUEngine(t *testing.T) {
	m, err := model.Load(testenv.Shared(t, "fixtures/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	seqs := [][]int{{1}, {1, 403, 407, 261, 378}, {1, 5, 9, 100, 200, 300, 400, 500, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}}
	last, mean, err := cuda.ForwardRef(m.Config, m.Tensor, cuda.F32, seqs)
	if err != nil {
		t.Fatal(err)
	}
	e, err := cpu.New(m, cpu.Options{DType: "float64"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	cpuLast, err := e.LastLogits(ctx, seqs, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows := []int{3, 511}
	cpuRows, err := e.LastLogits(ctx, seqs, rows)
	if err != nil {
		t.Fatal(err)
	}
	cpuMean, err := e.MeanHidden(ctx, seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		if err := cuda.Compare("last logits", last[i], cpuLast[i], 1e-5, 1e-5); err != nil {
			t.Errorf("seq %d: %v", i, err)
		}
		if err := cuda.Compare("mean hidden", mean[i], cpuMean[i], 1e-5, 1e-5); err != nil {
			t.Errorf("seq %d: %v", i, err)
		}
		want := []float32{last[i][rows[0]], last[i][rows[1]]}
		if err := cuda.Compare("rows", cpuRows[i], want, 1e-5, 1e-5); err != nil {
			t.Errorf("seq %d: %v", i, err)
		}
	}
}
