//go:build rellagpu

package cuda

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// NVRTCVersion returns the version of the NVRTC library found, and its path.
func NVRTCVersion() (major, minor int, path string, err error) {
	if err := openNVRTC(); err != nil {
		return 0, 0, "", err
	}
	var a, b C.int
	if r := C.r_nvrtcVersion(&a, &b); r != C.NVRTC_SUCCESS {
		return 0, 0, "", nvrtcError("nvrtcVersion", r, "")
	}
	return int(a), int(b), libs.nvrtcPath, nil
}

// NVRTCArchs returns the architectures the NVRTC found compiles for (e.g.
// 75, 80, 90), or nil when it cannot say (NVRTC before 11.2).
func NVRTCArchs() ([]int, error) {
	if err := openNVRTC(); err != nil {
		return nil, err
	}
	var buf [128]C.int
	n := int(C.r_nvrtcSupportedArchs(&buf[0], C.int(len(buf))))
	if n < 0 {
		return nil, nil
	}
	archs := make([]int, n)
	for i := range archs {
		archs[i] = int(buf[i])
	}
	return archs, nil
}

func nvrtcError(call string, r C.nvrtcResult, log string) error {
	e := &Error{Call: call, Code: int(r), Name: fmt.Sprintf("nvrtcResult %d", int(r))}
	if s := C.r_nvrtcGetErrorString(r); s != nil {
		e.Name = C.GoString(s)
	}
	if log = strings.TrimSpace(log); log != "" {
		e.Msg = "compiler log:\n" + log
	}
	return e
}

// compileOptions are the NVRTC options for type e and architecture sm
// (e.g. 90): a cubin for sm_XX, or PTX for compute_XX.
func compileOptions(e Elem, sm int, cubin bool) []string {
	arch := fmt.Sprintf("--gpu-architecture=compute_%d", sm)
	if cubin {
		arch = fmt.Sprintf("--gpu-architecture=sm_%d", sm)
	}
	return []string{arch, e.macro(), "-default-device"}
}

// Compile compiles the embedded kernels with NVRTC for storage type e and
// compute capability sm (major*10+minor): a cubin when cubin is true, else
// PTX. It needs no GPU, only libnvrtc. The compiler's log (warnings) comes
// back with the image.
func Compile(e Elem, sm int, cubin bool) (image []byte, log string, err error) {
	if err := openNVRTC(); err != nil {
		return nil, "", err
	}
	opts := compileOptions(e, sm, cubin)
	copts := make([]*C.char, len(opts))
	for i, o := range opts {
		copts[i] = C.CString(o)
		defer C.free(unsafe.Pointer(copts[i]))
	}
	src := C.CString(kernelSource)
	defer C.free(unsafe.Pointer(src))
	name := C.CString("llama.cu")
	defer C.free(unsafe.Pointer(name))
	var out, clog *C.char
	var n C.size_t
	wantCubin := C.int(0)
	if cubin {
		wantCubin = 1
	}
	r := C.r_nvrtcCompile(src, name, (**C.char)(unsafe.Pointer(&copts[0])), C.int(len(copts)), wantCubin, &out, &n, &clog)
	if clog != nil {
		log = C.GoString(clog)
		C.free(unsafe.Pointer(clog))
	}
	if r != C.NVRTC_SUCCESS {
		return nil, log, fmt.Errorf("compile llama.cu for sm_%d (%v, %s): %w", sm, e, strings.Join(opts, " "), nvrtcError("nvrtcCompileProgram", r, log))
	}
	image = C.GoBytes(unsafe.Pointer(out), C.int(n))
	C.free(unsafe.Pointer(out))
	return image, log, nil
}

// kernel is one function of a loaded module.
type kernel struct {
	name   string
	fn     C.CUfunction
	params []paramKind // from the source; launch checks its arguments against them
}

// Module is the kernel source compiled for one storage type and loaded on a device.
type Module struct {
	Elem Elem
	mod  C.CUmodule
	fns  map[string]*kernel
}

// cacheDir is where compiled cubins are kept between runs
// ($RELLA_KERNEL_CACHE, else the user cache folder), or "" for none.
func cacheDir() string {
	if d := os.Getenv("RELLA_KERNEL_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "rella", "kernels")
}

// LoadKernels compiles the kernels for type e and the device's own
// architecture and loads them (inside Do): a cubin for sm_XX when NVRTC
// knows the architecture; when it does not (a device newer than the
// NVRTC), PTX for the newest architecture it knows below, which the driver
// compiles at load — chosen by chooseKernelTarget and logged, never a
// silent fallback. Images are cached on disk by source, options and NVRTC
// version.
func (d *Device) LoadKernels(e Elem) (*Module, error) {
	sm := d.Major*10 + d.Minor
	major, minor, nvrtcPath, err := NVRTCVersion()
	if err != nil {
		return nil, err
	}
	archs, err := NVRTCArchs()
	if err != nil {
		return nil, err
	}
	nv := fmt.Sprintf("%d.%d", major, minor)
	target, err := chooseKernelTarget(sm, archs, nv)
	if err != nil {
		return nil, err
	}
	if target.Cubin {
		d.log.Info("kernels", "elem", e, "target", target.Why, "nvrtc", nv, "path", nvrtcPath)
	} else {
		d.log.Warn("kernels: no cubin for this device", "elem", e, "target", target.Why, "nvrtc", nv, "path", nvrtcPath)
	}
	opts := compileOptions(e, target.Arch, target.Cubin)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00nvrtc %d.%d", kernelSource, strings.Join(opts, " "), major, minor)
	key := hex.EncodeToString(h.Sum(nil))[:24]
	ext := "cubin"
	if !target.Cubin {
		ext = "ptx"
	}
	var image []byte
	dir := cacheDir()
	path := ""
	if dir != "" {
		path = filepath.Join(dir, fmt.Sprintf("llama-%v-%d-%s.%s", e, target.Arch, key, ext))
		if b, err := os.ReadFile(path); err == nil {
			image = b
		}
	}
	if image == nil {
		img, log, err := Compile(e, target.Arch, target.Cubin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", target.Why, err)
		}
		if log = strings.TrimSpace(log); log != "" {
			d.log.Warn("nvrtc log", "log", log)
		}
		if !target.Cubin {
			img = append(img, 0) // cuModuleLoadData reads PTX as a C string
		}
		image = img
		if path != "" {
			if err := writeCache(path, image); err != nil {
				d.log.Warn("kernel cache not written", "err", err)
			}
		}
	}
	params, err := kernelParams(kernelSource)
	if err != nil {
		return nil, err
	}
	m := &Module{Elem: e, fns: map[string]*kernel{}}
	if err := check("cuModuleLoadData", C.r_cuModuleLoadData(&m.mod, unsafe.Pointer(&image[0]))); err != nil {
		if !target.Cubin {
			return nil, fmt.Errorf("load kernels for sm_%d (%s; the driver's CUDA %s must be at least NVRTC %s's to compile its PTX): %w",
				sm, target.Why, cudaVersionString(libs.driverVersion), nv, err)
		}
		return nil, fmt.Errorf("load kernels for sm_%d (%s): %w", sm, target.Why, err)
	}
	for _, name := range KernelNames {
		cs := C.CString(name)
		k := &kernel{name: name, params: params[name]}
		err := check("cuModuleGetFunction", C.r_cuModuleGetFunction(&k.fn, m.mod, cs))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			C.r_cuModuleUnload(m.mod)
			return nil, fmt.Errorf("kernel %s: %w", name, err)
		}
		m.fns[name] = k
	}
	return m, nil
}

// writeCache writes b to path through a temporary file and a rename.
func writeCache(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes 0600
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

// Unload releases the module (inside Do).
func (m *Module) Unload() error { return check("cuModuleUnload", C.r_cuModuleUnload(m.mod)) }

// fn returns the named kernel.
func (m *Module) fn(name string) *kernel { return m.fns[name] }
