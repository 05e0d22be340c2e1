//go:build rellagpu

package cuda

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rella-project/rella/internal/testenv"
)

// skipOrFail skips a test that needs something this machine lacks, unless
// RELLA_REQUIRE_GPU is set (scripts/gpu-check.sh sets it on the GPU machine).
func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("RELLA_REQUIRE_GPU") != "" {
		t.Fatal(err)
	}
	t.Skip(err)
}

// TestNVRTCCompile compiles the embedded kernels with NVRTC for every
// storage type and the architectures users have (sm_70 V100 in fp16, sm_80
// A100 and sm_90 H100/H200 in bf16, all in f32). It needs libnvrtc but no
// GPU: scripts/build-gpu.sh --nvrtc fetches CUDA 11.8's into .kit/lib.
func TestNVRTCCompile(t *testing.T) {
	maj, min, path, err := NVRTCVersion()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Logf("nvrtc %d.%d from %s", maj, min, path)
	archs, err := NVRTCArchs()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nvrtc compiles for %v", archs)
	if maj >= 12 || (maj == 11 && min >= 2) {
		// From 11.2 NVRTC lists its architectures, and from 11.8 every one of the cases below is there.
		if archs == nil {
			t.Errorf("nvrtc %d.%d did not list its architectures", maj, min)
		}
		for _, sm := range []int{80, 90} {
			if tg, err := chooseKernelTarget(sm, archs, "test"); err != nil || !tg.Cubin || tg.Arch != sm {
				t.Errorf("sm_%d: target %+v, %v; want a cubin for sm_%d", sm, tg, err, sm)
			}
		}
	}
	cases := []struct {
		e  Elem
		sm int
	}{{F16, 70}, {F32, 70}, {BF16, 80}, {F32, 80}, {BF16, 90}, {F16, 90}, {F32, 90}}
	for _, c := range cases {
		if maj >= 13 && c.sm < 75 {
			continue // CUDA 13 dropped sm_70
		}
		for _, cubin := range []bool{false, true} {
			img, log, err := Compile(c.e, c.sm, cubin)
			if err != nil {
				t.Errorf("%v sm_%d cubin=%v: %v", c.e, c.sm, cubin, err)
				continue
			}
			if strings.TrimSpace(log) != "" {
				t.Logf("%v sm_%d: compiler log:\n%s", c.e, c.sm, log)
			}
			if !cubin {
				for _, name := range KernelNames {
					if !bytes.Contains(img, []byte(".entry "+name+"(")) {
						t.Errorf("%v sm_%d: PTX has no entry %s", c.e, c.sm, name)
					}
				}
			} else if !bytes.HasPrefix(img, []byte("\x7fELF")) {
				t.Errorf("%v sm_%d: cubin is not an ELF image", c.e, c.sm)
			}
		}
	}
}

// TestSymbols checks that the libraries export every entry point the
// binding looks up: the CUDA 11.8 stubs of the kit (scripts/build-gpu.sh puts
// libcuda.so and libcublas.so in <kit>/stubs) and the kit's NVRTC here, or
// the libraries the loader finds on a GPU machine.
func TestSymbols(t *testing.T) {
	kit := os.Getenv("RELLA_KIT")
	if kit == "" {
		kit = filepath.Join(testenv.RepoRoot(t), ".kit")
	}
	checked := 0
	for _, c := range []struct{ lib, path string }{
		{"cuda", filepath.Join(kit, "stubs", "libcuda.so")},
		{"cublas", filepath.Join(kit, "stubs", "libcublas.so")},
		{"nvrtc", filepath.Join(kit, "lib", "libnvrtc.so.11.2")},
		{"cuda", "libcuda.so.1"},
		{"cublas", "libcublas.so.13"}, {"cublas", "libcublas.so.12"},
		{"nvrtc", "libnvrtc.so.13"}, {"nvrtc", "libnvrtc.so.12"},
	} {
		if strings.HasPrefix(c.path, "/") && !fileExists(c.path) {
			continue
		}
		err := CheckSymbols(c.path, c.lib)
		if err != nil && strings.Contains(err.Error(), "cannot open shared object") {
			continue // not on this machine
		}
		if err != nil {
			t.Errorf("%s: %v", c.lib, err)
		}
		t.Logf("%s: every symbol found in %s", c.lib, c.path)
		checked++
	}
	if checked == 0 {
		skipOrFail(t, errors.New("no CUDA library or stub to check (run scripts/build-gpu.sh --nvrtc)"))
	}
	// The check can fail: libcuda exports no cuBLAS entry point.
	if stub := filepath.Join(kit, "stubs", "libcuda.so"); fileExists(stub) {
		if err := CheckSymbols(stub, "cublas"); err == nil || !strings.Contains(err.Error(), "cublasGemmEx") {
			t.Errorf("cuBLAS symbols in libcuda: got %v, want an error naming cublasGemmEx", err)
		}
	}
}

// TestKernelsOnDevice runs every kernel and GEMM on GPU 0 against the CPU
// references, with fresh random inputs each run.
func TestKernelsOnDevice(t *testing.T) {
	dev, err := OpenDevice(0, nil)
	if err != nil {
		skipOrFail(t, err)
	}
	defer dev.Close()
	seed := uint64(time.Now().UnixNano())
	t.Logf("%s sm_%d%d, seed %d", dev.Name, dev.Major, dev.Minor, seed)
	results, err := CheckKernels(context.Background(), dev, seed)
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%v %s: %v", r.Elem, r.Name, r.Err)
		} else {
			t.Logf("ok %v %s relerr %.2e", r.Elem, r.Name, r.RelErr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(results) == 0 {
		t.Fatal("no kernel checks ran")
	}
}

// TestEngineStories runs the engine on the stories260K fixture in f32 and in
// the device's half type against ForwardRef and llama2.c's logits.
func TestEngineStories(t *testing.T) {
	if _, err := DeviceCount(); err != nil {
		skipOrFail(t, err)
	}
	dir := testenv.Shared(t, "fixtures/stories260K")
	var out bytes.Buffer
	failed, err := checkModel(context.Background(), SelfTestOptions{ModelDir: dir}, uint64(time.Now().UnixNano()), &out, nil)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if failed > 0 {
		t.Errorf("%d engine checks failed", failed)
	}
}

// TestLaunchArgumentsMatchKernels calls every launcher with empty shapes
// (a zero grid, so nothing reaches the driver and no GPU is needed): each
// must pass arguments of the number and kinds the kernel declares.
func TestLaunchArgumentsMatchKernels(t *testing.T) {
	params, err := kernelParams(kernelSource)
	if err != nil {
		t.Fatal(err)
	}
	m := &Module{fns: map[string]*kernel{}}
	for _, name := range KernelNames {
		m.fns[name] = &kernel{name: name, params: params[name]}
	}
	o := ops{d: &Device{}, m: m}
	var b Buffer
	for name, err := range map[string]error{
		kEmbedGather: o.embed(b, b, b, 0, 8, 10),
		kRMSNorm:     o.rmsnorm(b, b, b, 0, 8, 1e-5),
		kRoPE:        o.rope(b, b, 0, 2, 8, 1e4),
		kAttention:   o.attention(b, b, b, b, b, 1, 0, 4, 2, 8),
		kSwiGLU:      o.swiglu(b, b, b, 0),
		kResidualAdd: o.residualAdd(b, b, 0),
		kGatherLast:  o.gatherLast(b, b, b, 0, 8),
		kLMHeadRows:  o.lmHeadRows(b, b, b, b, 0, 2, 8),
		kMeanPool:    o.meanPool(b, b, b, 0, 8),
	} {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// And a wrong call is caught.
	if err := o.d.launch(m.fn(kSwiGLU), dim3{}, dim3{}, 0, b, b, b, 0); err == nil {
		t.Errorf("swiglu with an int for its long long n was accepted")
	}
}

// TestLibraries reports what the binding loads on this machine, one "LIB"
// line each (scripts/gpu-check.sh puts them in its table): the CUDA
// version the driver supports, the NVRTC and cuBLAS chosen for it (the
// newest major the driver supports, never a newer one), the architectures
// NVRTC knows and the kernel target for GPU 0. Without a driver it skips
// (fails under RELLA_REQUIRE_GPU).
func TestLibraries(t *testing.T) {
	dv, err := DriverVersion()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Logf("LIB driver supports CUDA %s", cudaVersionString(dv))
	maj, min, path, err := NVRTCVersion()
	if err != nil {
		t.Fatal(err)
	}
	if maj > dv/1000 {
		t.Errorf("NVRTC %d.%d (%s) is newer than the driver's CUDA %s", maj, min, path, cudaVersionString(dv))
	}
	archs, err := NVRTCArchs()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("LIB nvrtc %d.%d %s (architectures %v)", maj, min, path, archs)
	dev, err := OpenDevice(0, nil)
	if err != nil {
		skipOrFail(t, err)
	}
	defer dev.Close()
	target, err := chooseKernelTarget(dev.Major*10+dev.Minor, archs, fmt.Sprintf("%d.%d", maj, min))
	if err != nil {
		t.Error(err)
	}
	t.Logf("LIB device %s sm_%d%d: kernels as %s", dev.Name, dev.Major, dev.Minor, target.Why)
	err = dev.Do(func() error {
		b, err := dev.NewBLAS()
		if err != nil {
			return err
		}
		t.Logf("LIB cublas %d %s", b.Version, b.Path)
		if b.Version/10000 > dv/1000 {
			t.Errorf("cuBLAS %d (%s) is newer than the driver's CUDA %s", b.Version, b.Path, cudaVersionString(dv))
		}
		return b.Destroy()
	})
	if err != nil {
		t.Fatal(err)
	}
}
