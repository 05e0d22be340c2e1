//go:build rellagpu

package cuda

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// Enabled reports whether this build has GPU support (the rellagpu tag).
const Enabled = true

// Error is a failed CUDA driver, cuBLAS or NVRTC call.
type Error struct {
	Call string // the C function, e.g. "cuMemAlloc"
	Code int    // its status code
	Name string // the status name, e.g. "CUDA_ERROR_OUT_OF_MEMORY"
	Msg  string // the library's description, if it has one
}

// Error names the call and the status.
func (e *Error) Error() string {
	s := fmt.Sprintf("cuda: %s: %s (%d)", e.Call, e.Name, e.Code)
	if e.Msg != "" && e.Msg != e.Name {
		s += ": " + e.Msg
	}
	return s
}

// errOutOfMemory is CUDA_ERROR_OUT_OF_MEMORY.
const errOutOfMemory = 2

// check turns a driver API status into an error naming the call.
func check(call string, r C.CUresult) error {
	if r == C.CUDA_SUCCESS {
		return nil
	}
	e := &Error{Call: call, Code: int(r), Name: fmt.Sprintf("CUresult %d", int(r))}
	if s := C.r_cuErrorName(r); s != nil {
		e.Name = C.GoString(s)
	}
	if s := C.r_cuErrorString(r); s != nil {
		e.Msg = C.GoString(s)
	}
	return e
}

// libs holds the outcome of opening the CUDA libraries. The function
// pointers they fill are process-wide by nature (dlopen), so they are
// opened once per process.
var libs struct {
	loadOnce, cudaOnce, blasOnce, nvrtcOnce sync.Once
	loadErr, cudaErr, blasErr, nvrtcErr     error
	driverVersion                           int // 0: no driver library
	blasPath, nvrtcPath                     string
}

// openFirst tries each candidate library in turn with open, recording why
// each one failed.
func openFirst(attempts []libAttempt, open func(path *C.char, err *C.char, n C.int) C.int) (string, []libFailure) {
	var failed []libFailure
	buf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(buf))
	for _, a := range attempts {
		cs := C.CString(a.Path)
		r := open(cs, buf, 512)
		C.free(unsafe.Pointer(cs))
		if r == 0 {
			return a.Path, nil
		}
		failed = append(failed, libFailure{a, C.GoString(buf)})
	}
	return "", failed
}

// loadDriver opens libcuda (without initialising it) and reads the CUDA
// version the driver supports, which decides the cuBLAS and NVRTC to load.
func loadDriver() error {
	libs.loadOnce.Do(func() {
		var attempts []libAttempt
		if p := os.Getenv("RELLA_LIBCUDA"); p != "" {
			attempts = append(attempts, libAttempt{Path: p, Where: "$RELLA_LIBCUDA"})
		}
		for _, n := range []string{"libcuda.so.1", "libcuda.so"} {
			attempts = append(attempts, libAttempt{Path: n, Where: "loader search (LD_LIBRARY_PATH, ld.so.cache)"})
		}
		path, failed := openFirst(attempts, func(p, e *C.char, n C.int) C.int { return C.rella_open_cuda(p, e, n) })
		if path == "" {
			var b strings.Builder
			b.WriteString("cuda: cannot open the CUDA driver library (is the NVIDIA driver installed and the GPU visible?); tried:")
			for _, f := range failed {
				fmt.Fprintf(&b, "\n  %s [%s]: %s", f.Path, f.Where, f.Err)
			}
			libs.loadErr = errors.New(b.String())
			return
		}
		var v C.int
		if libs.loadErr = check("cuDriverGetVersion", C.r_cuDriverGetVersion(&v)); libs.loadErr == nil {
			libs.driverVersion = int(v)
		}
	})
	return libs.loadErr
}

func openCUDA() error {
	libs.cudaOnce.Do(func() {
		if libs.cudaErr = loadDriver(); libs.cudaErr == nil {
			libs.cudaErr = check("cuInit", C.r_cuInit(0))
		}
	})
	return libs.cudaErr
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// openLib opens lib for the driver's CUDA version (libPlan: the newest
// major the driver supports first, never a newer one; $ENV first), and
// returns the path that opened, or an error listing every attempt.
func openLib(lib cudaLib, open func(path *C.char, err *C.char, n C.int) C.int) (string, error) {
	dv := 0
	if loadDriver() == nil {
		dv = libs.driverVersion
	}
	p, err := planLib(lib, dv, os.Getenv(lib.Env), libSearchDirs(os.Getenv, filepath.Glob), fileExists, filepath.Glob)
	if err != nil {
		return "", err
	}
	path, failed := openFirst(p.Attempts, open)
	if path == "" {
		return "", p.error(failed)
	}
	return path, nil
}

func openBLAS() error {
	libs.blasOnce.Do(func() {
		libs.blasPath, libs.blasErr = openLib(libCUBLAS, func(p, e *C.char, n C.int) C.int { return C.rella_open_cublas(p, e, n) })
	})
	return libs.blasErr
}

func openNVRTC() error {
	libs.nvrtcOnce.Do(func() {
		libs.nvrtcPath, libs.nvrtcErr = openLib(libNVRTC, func(p, e *C.char, n C.int) C.int { return C.rella_open_nvrtc(p, e, n) })
		if libs.nvrtcErr != nil {
			return
		}
		var a, b C.int
		if r := C.r_nvrtcVersion(&a, &b); r != C.NVRTC_SUCCESS {
			libs.nvrtcErr = nvrtcError("nvrtcVersion", r, "")
			return
		}
		libs.nvrtcErr = checkLibMajor(libNVRTC, libs.nvrtcPath, int(a), libs.driverVersion)
	})
	return libs.nvrtcErr
}

// CheckSymbols opens the library at path and reports whether it exports
// every entry point the binding uses from it (lib is "cuda", "cublas" or
// "nvrtc"), without loading it for use. It needs no GPU: the stub libraries
// of a CUDA toolkit will do.
func CheckSymbols(path, lib string) error {
	which := map[string]C.int{"cuda": 0, "cublas": 1, "nvrtc": 2}
	w, ok := which[lib]
	if !ok {
		return fmt.Errorf("cuda: unknown library %q", lib)
	}
	buf := (*C.char)(C.malloc(4096))
	defer C.free(unsafe.Pointer(buf))
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	if C.rella_check_symbols(cs, w, buf, 4096) != 0 {
		return fmt.Errorf("cuda: %s: missing or unopenable:%s", path, C.GoString(buf))
	}
	return nil
}

// DriverVersion returns the CUDA version the driver supports, e.g. 13000 for 13.0.
// It needs the driver library, not a visible GPU.
func DriverVersion() (int, error) {
	if err := loadDriver(); err != nil {
		return 0, err
	}
	return libs.driverVersion, nil
}

// DeviceCount returns the number of visible CUDA devices.
func DeviceCount() (int, error) {
	if err := openCUDA(); err != nil {
		return 0, err
	}
	var n C.int
	if err := check("cuDeviceGetCount", C.r_cuDeviceGetCount(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Device is one GPU with its primary context made current on a goroutine
// locked to its OS thread. All CUDA work of the device runs in functions
// passed to Do; the methods documented "inside Do" may only be called there.
type Device struct {
	Index        int
	Name         string
	Major, Minor int   // compute capability
	TotalMem     int64 // bytes
	SMs          int   // multiprocessors

	dev    C.CUdevice
	ctx    C.CUcontext
	stream C.CUstream
	work   chan func()
	done   chan struct{}
	alloc  allocator
	log    *slog.Logger
	closed bool
}

// OpenDevice retains the primary context of device index and starts its worker goroutine.
func OpenDevice(index int, log *slog.Logger) (*Device, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n, err := DeviceCount()
	if err != nil {
		return nil, err
	}
	if index < 0 || index >= n {
		return nil, fmt.Errorf("cuda: device %d does not exist (%d visible)", index, n)
	}
	d := &Device{Index: index, work: make(chan func()), done: make(chan struct{}), log: log}
	ready := make(chan error, 1)
	go d.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	log.Info("cuda device", "index", index, "name", d.Name, "sm", fmt.Sprintf("%d%d", d.Major, d.Minor),
		"memory_gib", fmt.Sprintf("%.1f", float64(d.TotalMem)/(1<<30)))
	return d, nil
}

// loop is the device's worker: it locks its OS thread, makes the primary
// context current, and runs the functions sent by Do until Close.
func (d *Device) loop(ready chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.init(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for fn := range d.work {
		fn()
	}
	d.alloc.trim()
	if d.stream != nil {
		C.r_cuStreamDestroy(d.stream)
	}
	C.r_cuDevicePrimaryCtxRelease(d.dev)
	close(d.done)
}

func (d *Device) init() error {
	if err := check("cuDeviceGet", C.r_cuDeviceGet(&d.dev, C.int(d.Index))); err != nil {
		return err
	}
	name := make([]C.char, 256)
	if err := check("cuDeviceGetName", C.r_cuDeviceGetName(&name[0], 256, d.dev)); err != nil {
		return err
	}
	d.Name = C.GoString(&name[0])
	attr := func(a C.CUdevice_attribute) (int, error) {
		var v C.int
		err := check("cuDeviceGetAttribute", C.r_cuDeviceGetAttribute(&v, a, d.dev))
		return int(v), err
	}
	var err error
	if d.Major, err = attr(C.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR); err != nil {
		return err
	}
	if d.Minor, err = attr(C.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR); err != nil {
		return err
	}
	if d.SMs, err = attr(C.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT); err != nil {
		return err
	}
	var total C.size_t
	if err := check("cuDeviceTotalMem", C.r_cuDeviceTotalMem(&total, d.dev)); err != nil {
		return err
	}
	d.TotalMem = int64(total)
	if err := check("cuDevicePrimaryCtxRetain", C.r_cuDevicePrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return err
	}
	if err := check("cuCtxSetCurrent", C.r_cuCtxSetCurrent(d.ctx)); err != nil {
		C.r_cuDevicePrimaryCtxRelease(d.dev)
		return err
	}
	// A non-blocking stream: no implicit synchronisation with the legacy default stream.
	if err := check("cuStreamCreate", C.r_cuStreamCreate(&d.stream, C.CU_STREAM_NON_BLOCKING)); err != nil {
		C.r_cuDevicePrimaryCtxRelease(d.dev)
		return err
	}
	return nil
}

// Do runs fn on the device's thread, with its context current, and returns fn's error.
func (d *Device) Do(fn func() error) error {
	if d.closed {
		return errors.New("cuda: device is closed")
	}
	errc := make(chan error, 1)
	d.work <- func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("cuda: panic on the device thread: %v", r)
			}
		}()
		errc <- fn()
	}
	return <-errc
}

// Close frees the cached device memory, releases the primary context and
// stops the worker. Buffers still held become invalid.
func (d *Device) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	close(d.work)
	<-d.done
	return nil
}

// MemInfo returns the free and total device memory in bytes (inside Do).
func (d *Device) MemInfo() (free, total int64, err error) {
	var f, t C.size_t
	if err := check("cuMemGetInfo", C.r_cuMemGetInfo(&f, &t)); err != nil {
		return 0, 0, err
	}
	return int64(f), int64(t), nil
}

// Sync waits for all work queued on the device's stream (inside Do).
func (d *Device) Sync() error {
	return check("cuStreamSynchronize", C.r_cuStreamSynchronize(d.stream))
}

// Event is a CUDA event, for timing work on the device's stream.
type Event struct{ e C.CUevent }

// NewEvent creates an event (inside Do).
func (d *Device) NewEvent() (*Event, error) {
	ev := &Event{}
	if err := check("cuEventCreate", C.r_cuEventCreate(&ev.e, C.CU_EVENT_DEFAULT)); err != nil {
		return nil, err
	}
	return ev, nil
}

// Record queues the event on the device's stream (inside Do).
func (d *Device) Record(ev *Event) error {
	return check("cuEventRecord", C.r_cuEventRecord(ev.e, d.stream))
}

// Elapsed waits for end and returns the milliseconds between start and end (inside Do).
func Elapsed(start, end *Event) (float32, error) {
	if err := check("cuEventSynchronize", C.r_cuEventSynchronize(end.e)); err != nil {
		return 0, err
	}
	var ms C.float
	if err := check("cuEventElapsedTime", C.r_cuEventElapsedTime(&ms, start.e, end.e)); err != nil {
		return 0, err
	}
	return float32(ms), nil
}

// Destroy releases the event (inside Do).
func (ev *Event) Destroy() error { return check("cuEventDestroy", C.r_cuEventDestroy(ev.e)) }

// Stream is the device's stream as an integer (a CUstream), for libraries
// that enqueue on it (NCCL); use it inside Do.
func (d *Device) Stream() uintptr { return uintptr(unsafe.Pointer(d.stream)) }
