package cuda

// Exported views of what the launchers and the device self-test use, for
// cuda/kernelexec, which runs the kernel source on the CPU.

// Encode converts v to e's little-endian bytes, as uploads do.
func (e Elem) Encode(v []float32) []byte { return e.encode(v) }

// Decode converts e's little-endian bytes to float32, as downloads do.
func (e Elem) Decode(b []byte) []float32 { return e.decode(b) }

// Macro is the preprocessor define that selects e in the kernel source
// (-DRELLA_F32, -DRELLA_BF16, -DRELLA_F16).
func (e Elem) Macro() string { return e.macro() }

// KernelParamKinds parses the extern "C" kernels of src (as the launchers
// check their arguments): kernel name -> one byte per parameter, 'p' a
// pointer, 'i' int, 'l' long long, 'f' float.
func KernelParamKinds(src string) (map[string]string, error) {
	ps, err := kernelParams(src)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ps))
	for name, kinds := range ps {
		b := make([]byte, len(kinds))
		for i, k := range kinds {
			b[i] = byte(k)
		}
		out[name] = string(b)
	}
	return out, nil
}
