package cuda

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/model"
)

var updateMemoryDoc = flag.Bool("update-memory-doc", false, "rewrite the table in docs/memory.md")

const tableStart, tableEnd = "<!-- memory table: go test ./cuda -run TestMemoryTable -update-memory-doc -->\n", "<!-- end of memory table -->"

// TestMemoryTable keeps docs/memory.md's table equal to MemoryTable (the
// code the engine's checks use), and checks the facts the issue names
// against arithmetic done here: 13B fp16 weights are 13.0e9 values × 2
// bytes (24.2 GiB: no 16 GB V100), int8 brings them to about half, and the
// plan grows with the micro-batch.
func TestMemoryTable(t *testing.T) {
	const n13 = 40*(2*5120+4*5120*5120+3*5120*13824) + 2*32000*5120 + 5120 // 13B parameters
	if got, want := WeightBytes(Vicuna13B, F16), int64(2*n13); got != want {
		t.Errorf("13B fp16 weights %d bytes, want %d", got, want)
	}
	q := QuantizedWeightBytes(Vicuna13B, F16, model.QuantInt8)
	proj := int64(40 * (4*5120*5120 + 3*5120*13824))
	rows := int64(40 * (4*5120 + 2*13824 + 5120))
	if want := int64(2*n13) - 2*proj + proj + 4*rows + 2*5120*13824; q != want {
		t.Errorf("13B int8 weights %d bytes, want %d", q, want)
	}
	t.Logf("13B weights: fp16 %.2f GiB, int8 %.2f GiB; 7B: fp16 %.2f GiB, int8 %.2f GiB", gib(WeightBytes(Vicuna13B, F16)), gib(q),
		gib(WeightBytes(Vicuna7B, F16)), gib(QuantizedWeightBytes(Vicuna7B, F16, model.QuantInt8)))
	params := loraParams(Vicuna13B, 8, "q_proj", "v_proj")
	p1, _ := PlanMemory(Vicuna13B, F16, "", 4096, params, 512, 2)
	p8, _ := PlanMemory(Vicuna13B, F16, "", 4096, params, 8*512, 16)
	if !(p8.Total() > p1.Total()) || p1.Fits(16160<<20) {
		t.Errorf("13B fp16 plans: micro-batch 1 %s, 8 %s", p1, p8)
	}
	table := MemoryTable()
	path := filepath.Join(testenv.RepoRoot(t), "docs", "memory.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, tableStart), strings.Index(s, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s: no table markers", path)
	}
	if *updateMemoryDoc {
		s = s[:i+len(tableStart)] + table + s[j:]
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got := s[i+len(tableStart) : j]; got != table {
		t.Errorf("docs/memory.md's table is not MemoryTable's; rerun with -update-memory-doc. MemoryTable:\n%s", table)
	}
}
