package cuda

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"
)

// llamaSource and trainSource are the kernels of the inference path and of
// LoRA training (kernels/train.cu uses llama.cu's types and helpers).
//
//go:embed kernels/llama.cu
var llamaSource string

//go:embed kernels/train.cu
var trainSource string

// kernelSource is the CUDA C++ source of every kernel, llama.cu then
// train.cu as one program (the #line keeps NVRTC's messages pointing at
// train.cu); NVRTC compiles it at run time with one of the Elem macros.
var kernelSource = llamaSource + "\n#line 1 \"train.cu\"\n" + trainSource

// KernelSource returns the embedded CUDA source of the kernels.
func KernelSource() string { return kernelSource }

// Names of the kernels the Go side launches (extern "C" in kernels/llama.cu).
const (
	kEmbedGather = "embed_gather"
	kRMSNorm     = "rmsnorm"
	kRoPE        = "rope"
	kAttention   = "attention"
	kSwiGLU      = "swiglu"
	kResidualAdd = "residual_add"
	kGatherLast  = "gather_last"
	kLMHeadRows  = "lm_head_rows"
	kMeanPool    = "mean_pool"
)

// KernelNames lists every kernel the Go side launches.
var KernelNames = append([]string{kEmbedGather, kRMSNorm, kRoPE, kAttention, kSwiGLU, kResidualAdd, kGatherLast, kLMHeadRows, kMeanPool},
	trainKernelNames...)

// Limits the kernels are written for (they match macros in llama.cu).
const (
	// MaxHeadDim is the largest head dimension the attention kernel supports (ATT_MAXD).
	MaxHeadDim = 128
	// attQT is the number of query rows per attention block (ATT_QT), one warp each.
	attQT = 8
)

// Elem is the storage type of weights and of the activations that feed the GEMMs.
type Elem int

const (
	// F32 stores float32; the tests use it to check kernels at fp32 tolerance.
	F32 Elem = iota
	// BF16 stores bfloat16 (sm_80 and newer).
	BF16
	// F16 stores IEEE half precision (sm_70, which has no bf16).
	F16
)

// String names the type.
func (e Elem) String() string {
	switch e {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	case F16:
		return "f16"
	}
	return fmt.Sprintf("Elem(%d)", int(e))
}

// Size is the number of bytes per element.
func (e Elem) Size() int {
	if e == F32 {
		return 4
	}
	return 2
}

// macro is the preprocessor define that selects e in llama.cu.
func (e Elem) macro() string {
	switch e {
	case F32:
		return "-DRELLA_F32"
	case F16:
		return "-DRELLA_F16"
	}
	return "-DRELLA_BF16"
}

// ElemFor picks the storage type for a device of compute capability major.minor:
// bf16 from sm_80 (Ampere) on, fp16 before.
func ElemFor(major, minor int) Elem {
	if major >= 8 {
		return BF16
	}
	return F16
}

// paramKind is the kind of one kernel parameter, as the launcher must pass it.
type paramKind byte

const (
	pPtr paramKind = 'p' // a device pointer (a Buffer)
	pI32 paramKind = 'i' // int
	pI64 paramKind = 'l' // long long
	pF32 paramKind = 'f' // float
)

// kernelParams parses the parameter lists of the extern "C" kernels in src,
// so that a launch with arguments of the wrong number or kind fails with an
// error instead of running with garbage.
func kernelParams(src string) (map[string][]paramKind, error) {
	out := map[string][]paramKind{}
	for _, m := range kernelDecl.FindAllStringSubmatch(src, -1) {
		var kinds []paramKind
		for _, p := range strings.Split(m[2], ",") {
			p = strings.Join(strings.Fields(p), " ")
			switch {
			case strings.Contains(p, "*"):
				kinds = append(kinds, pPtr)
			case strings.HasPrefix(p, "long long "):
				kinds = append(kinds, pI64)
			case strings.HasPrefix(p, "int "):
				kinds = append(kinds, pI32)
			case strings.HasPrefix(p, "float "):
				kinds = append(kinds, pF32)
			default:
				return nil, fmt.Errorf("cuda: kernel %s: parameter %q has a type the launcher does not pass", m[1], p)
			}
		}
		out[m[1]] = kinds
	}
	return out, nil
}

// kernelDecl matches a kernel's name and parameter list.
var kernelDecl = regexp.MustCompile(`extern "C" __global__ void(?: __launch_bounds__\([^)]*\))? (\w+)\(([^)]*)\)`)
