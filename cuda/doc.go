// Package cuda is rella's GPU path: a small binding of the CUDA driver API,
// cuBLAS and NVRTC (all opened with dlopen at run time), the LLaMA kernels in
// kernels/llama.cu (compiled by NVRTC for the device's own architecture), and
// an inference Engine (LastLogits, MeanHidden) that runs a HF LLaMA
// checkpoint in bf16 (fp16 on sm_70).
//
// The code that touches CUDA builds only with the tag rellagpu (see
// scripts/build-gpu.sh); without it NewEngine returns an error that says how
// to build GPU support. The CPU references of every kernel (ref.go), the
// tolerance checker (check.go) and the kernel list (kernels.go) build always:
// they are tested here on the CPU, and the tagged tests compare each kernel
// on the device against them.
//
// Layout conventions shared by the kernels and the references: matrices are
// row-major; the tokens of a batch of sequences are packed without padding,
// and cu (B+1 offsets, cu[0] = 0) marks where each sequence starts; q and the
// attention output are [N, H*hd], k and v are [N, KV*hd].
package cuda
