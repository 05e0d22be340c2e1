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
// architecture (a cubin, cached on disk by source, options and NVRTC
// version) and loads them (inside Do). When NVRTC does not know the
// architecture as sm_XX it falls back to PTX, which the driver compiles.
func (d *Device) LoadKernels(e Elem) (*Module, error) {
	sm := d.Major*10 + d.Minor
	major, minor, _, err := NVRTCVersion()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00nvrtc %d.%d", kernelSource, strings.Join(compileOptions(e, sm, true), " "), major, minor)
	key := hex.EncodeToString(h.Sum(nil))[:24]
	var image []byte
	dir := cacheDir()
	path := ""
	if dir != "" {
		path = filepath.Join(dir, fmt.Sprintf("llama-%v-sm%d-%s.cubin", e, sm, key))
		if b, err := os.ReadFile(path); err == nil {
			image = b
		}
	}
	if image == nil {
		img, log, err := Compile(e, sm, true)
		if err != nil {
			d.log.Warn("cubin compile failed; trying PTX", "sm", sm, "err", err)
			if img, log, err = Compile(e, sm, false); err != nil {
				return nil, err
			}
			img = append(img, 0) // cuModuleLoadData reads PTX as a C string
			path = ""            // do not cache PTX under the cubin name
		}
		if log = strings.TrimSpace(log); log != "" {
			d.log.Warn("nvrtc log", "log", log)
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
		return nil, fmt.Errorf("load kernels for sm_%d: %w", sm, err)
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
