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
	params, err := kernelParams(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(params) != len(defined) {
		t.Errorf("kernelParams found %d kernels, the source defines %d", len(params), len(defined))
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

// TestKernelParams checks the parsed parameter kinds of two kernels against
// their declarations, written out by hand.
func TestKernelParams(t *testing.T) {
	params, err := kernelParams(KernelSource())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		kAttention: "pppppiiif", // o, q, k, v, cu, H, KV, hd, scale
		kSwiGLU:    "pppl",      // out, g, u, n (long long)
		kRMSNorm:   "pppiif",    // out, x, w, n, d, eps
	}
	for name, w := range want {
		if got := string(params[name]); got != w {
			t.Errorf("%s: got kinds %q, want %q", name, got, w)
		}
	}
	if _, err := kernelParams(`extern "C" __global__ void f(double x) {}`); err == nil {
		t.Errorf("a double parameter was accepted")
	}
}
