package cuda

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestKernelSourceNames checks that the embedded source defines, as
// extern "C" kernels, exactly the names the Go side launches, and that the
// macros the launchers rely on match the Go constants.
func TestKernelSourceNames(t *testing.T) {
	src := KernelSource()
	re := regexp.MustCompile(`extern "C" __global__ void(?: __launch_bounds__\([^)]*\))? (\w+)\(`)
	var defined []string
	for _, m := range re.FindAllStringSubmatch(src, -1) {
		defined = append(defined, m[1])
	}
	for _, name := range KernelNames {
		if !slices.Contains(defined, name) {
			t.Errorf("kernel %q is launched but not defined in kernels/llama.cu", name)
		}
	}
	for _, name := range defined {
		if !slices.Contains(KernelNames, name) {
			t.Errorf("kernel %q is defined but missing from KernelNames", name)
		}
	}
	for macro, want := range map[string]int{"ATT_QT": attQT, "ATT_MAXD": MaxHeadDim} {
		if !strings.Contains(src, fmt.Sprintf("#define %s %d\n", macro, want)) {
			t.Errorf("kernels/llama.cu: want #define %s %d", macro, want)
		}
	}
	// NVRTC finds no headers on a bare machine: the source must include none.
	if strings.Contains(src, "#include") {
		t.Errorf("kernels/llama.cu includes a header")
	}
}
