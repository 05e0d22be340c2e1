package cuda

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Which cuBLAS and NVRTC to load follows the driver: the newest major the
// driver supports (cuDriverGetVersion), then older ones, never a newer one
// (a newer cuBLAS fails on an older driver, and PTX from a newer NVRTC does
// not load). The plan is pure Go, so it is tested without a GPU; the GPU
// build (driver.go) opens the candidates with dlopen in this order.

const (
	// oldestCUDAMajor is the oldest CUDA release whose libraries the binding uses.
	oldestCUDAMajor = 11
	// newestCUDAMajor is the newest release tried when the driver's version
	// is unknown (no driver: compiling kernels without a GPU).
	newestCUDAMajor = 13
)

// cudaLib is a CUDA library the binding opens at run time.
type cudaLib struct {
	Name string // for messages: "cuBLAS"
	Env  string // the variable that names its path
	Base string // file name before ".so": "libcublas"
}

var (
	libCUBLAS = cudaLib{Name: "cuBLAS", Env: "RELLA_CUBLAS", Base: "libcublas"}
	libNVRTC  = cudaLib{Name: "NVRTC", Env: "RELLA_NVRTC", Base: "libnvrtc"}
)

// cudaVersionString writes a CUDA version number (1000·major + 10·minor,
// as cuDriverGetVersion returns it) as "12.4".
func cudaVersionString(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// libMajors lists the CUDA majors whose libraries may be used with a driver
// of version driverVersion, newest first: the driver's own major down to
// oldestCUDAMajor. A driverVersion of 0 means unknown: newestCUDAMajor down.
func libMajors(driverVersion int) ([]int, error) {
	top := newestCUDAMajor
	if driverVersion > 0 {
		top = driverVersion / 1000
	}
	if top < oldestCUDAMajor {
		return nil, fmt.Errorf("cuda: the driver supports CUDA %s; rella needs CUDA %d or newer (update the NVIDIA driver)",
			cudaVersionString(driverVersion), oldestCUDAMajor)
	}
	var ms []int
	for m := top; m >= oldestCUDAMajor; m-- {
		ms = append(ms, m)
	}
	return ms, nil
}

// sonames are the library's file names for the majors, newest first.
// NVRTC 11 kept one soname per minor (libnvrtc.so.11.2 from CUDA 11.2 on).
func (l cudaLib) sonames(majors []int) []string {
	var names []string
	for _, m := range majors {
		if l.Base == libNVRTC.Base && m == 11 {
			names = append(names, "libnvrtc.so.11.2", "libnvrtc.so.11.1", "libnvrtc.so.11.0")
			continue
		}
		names = append(names, fmt.Sprintf("%s.so.%d", l.Base, m))
	}
	return names
}

// sonameMajor is the CUDA major in a library file name (libcublas.so.12,
// libcublas.so.12.4.5.8, libnvrtc.so.11.2), or 0.
func sonameMajor(name string) int {
	_, rest, ok := strings.Cut(filepath.Base(name), ".so.")
	if !ok {
		return 0
	}
	major, _, _ := strings.Cut(rest, ".")
	m, err := strconv.Atoi(major)
	if err != nil {
		return 0
	}
	return m
}

// libSearchDirs lists the folders, beyond the loader's own search
// (LD_LIBRARY_PATH, ld.so.cache), where CUDA libraries are commonly
// installed: CUDA toolkits (newest version first) and Python's NVIDIA
// wheels and torch (a machine with PyTorch usually has cuBLAS and NVRTC
// only there). getenv and glob are os.Getenv and filepath.Glob outside
// tests; only existing folders are returned, each once.
func libSearchDirs(getenv func(string) string, glob func(string) ([]string, error)) []string {
	var pats []string
	for _, v := range []string{"CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"} {
		if d := getenv(v); d != "" {
			pats = append(pats, filepath.Join(d, "lib64"), filepath.Join(d, "lib"))
		}
	}
	pats = append(pats, "/usr/local/cuda/lib64", "/usr/local/cuda-*/lib64", "/usr/local/cuda*/targets/*/lib")
	var prefixes []string
	for _, v := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if d := getenv(v); d != "" {
			prefixes = append(prefixes, filepath.Join(d, "lib", "python3*", "site-packages"))
			if v == "CONDA_PREFIX" {
				pats = append(pats, filepath.Join(d, "lib"))
			}
		}
	}
	if h := getenv("HOME"); h != "" {
		prefixes = append(prefixes, filepath.Join(h, ".local", "lib", "python3*", "site-packages"))
	}
	prefixes = append(prefixes, "/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages",
		"/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages", "/opt/conda/lib/python3*/site-packages")
	for _, p := range prefixes {
		pats = append(pats, filepath.Join(p, "nvidia", "*", "lib"), filepath.Join(p, "torch", "lib"))
	}
	pats = append(pats, "/opt/conda/lib")
	var dirs []string
	seen := map[string]bool{}
	for _, p := range pats {
		ms, err := glob(p)
		if err != nil {
			continue
		}
		// cuda-12.4 before cuda-12.1, nvidia/cu13 before nvidia/cublas: newest first by name.
		sort.Sort(sort.Reverse(sort.StringSlice(ms)))
		for _, d := range ms {
			d = filepath.Clean(d)
			if !seen[d] {
				seen[d] = true
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// libAttempt is one way to open a library: Path as dlopen gets it, and
// where it comes from.
type libAttempt struct {
	Path  string
	Where string
}

// libPlan is the order in which to open a library for a driver, and what
// was found but left out.
type libPlan struct {
	Lib           cudaLib
	DriverVersion int // 0: unknown
	Attempts      []libAttempt
	Skipped       []string // files in the folders whose major is newer than the driver's
	Dirs          []string // the folders searched
}

// planLib orders the ways to open lib for a driver of version
// driverVersion (0: unknown): the path in the library's environment
// variable (envPath) first, then for each allowed soname, newest first,
// the loader's own search and each folder of dirs that holds the file.
// exists reports whether a file exists; glob lists files (to find the
// newer majors it skips, named in the error).
func planLib(lib cudaLib, driverVersion int, envPath string, dirs []string, exists func(string) bool, glob func(string) ([]string, error)) (libPlan, error) {
	p := libPlan{Lib: lib, DriverVersion: driverVersion, Dirs: dirs}
	majors, err := libMajors(driverVersion)
	if err != nil {
		return p, err
	}
	if envPath != "" {
		p.Attempts = append(p.Attempts, libAttempt{Path: envPath, Where: "$" + lib.Env})
	}
	for _, name := range lib.sonames(majors) {
		p.Attempts = append(p.Attempts, libAttempt{Path: name, Where: "loader search (LD_LIBRARY_PATH, ld.so.cache)"})
		for _, d := range dirs {
			if f := filepath.Join(d, name); exists(f) {
				p.Attempts = append(p.Attempts, libAttempt{Path: f, Where: d})
			}
		}
	}
	if driverVersion > 0 {
		for _, d := range dirs {
			fs, _ := glob(filepath.Join(d, lib.Base+".so.*"))
			for _, f := range fs {
				if m := sonameMajor(f); m > driverVersion/1000 && !slices.Contains(p.Skipped, f) {
					p.Skipped = append(p.Skipped, f)
				}
			}
		}
	}
	return p, nil
}

// libFailure is an attempt that did not open, and why.
type libFailure struct {
	libAttempt
	Err string
}

// error is the message when no attempt opened: every attempt with its
// reason, the newer files skipped, the folders searched, and what to set.
func (p libPlan) error(failed []libFailure) error {
	var b strings.Builder
	if p.DriverVersion > 0 {
		fmt.Fprintf(&b, "cuda: cannot open %s for the driver's CUDA %s (majors tried newest first, never newer than the driver)",
			p.Lib.Name, cudaVersionString(p.DriverVersion))
	} else {
		fmt.Fprintf(&b, "cuda: cannot open %s (no driver library, so every major from %d down was tried)", p.Lib.Name, newestCUDAMajor)
	}
	if len(failed) == 0 {
		b.WriteString("\n  nothing to try")
	}
	for _, f := range failed {
		fmt.Fprintf(&b, "\n  %s [%s]: %s", f.Path, f.Where, f.Err)
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(&b, "\n  %s: found, not tried (newer than the driver's CUDA %s)", s, cudaVersionString(p.DriverVersion))
	}
	if len(p.Dirs) > 0 {
		fmt.Fprintf(&b, "\n  folders searched besides the loader's: %s", strings.Join(p.Dirs, ", "))
	} else {
		b.WriteString("\n  no CUDA toolkit or Python NVIDIA wheel folder found besides the loader's search")
	}
	newest := "its newest"
	if ms, err := libMajors(p.DriverVersion); err == nil {
		newest = p.Lib.sonames(ms[:1])[0]
	}
	fmt.Fprintf(&b, "\n  set LD_LIBRARY_PATH to the folder of %s (or an older major), or %s to its path", newest, p.Lib.Env)
	return fmt.Errorf("%s", b.String())
}

// checkLibMajor returns an error when a library that opened (from $ENV,
// say) is of a newer CUDA major than the driver supports.
func checkLibMajor(lib cudaLib, path string, libMajor, driverVersion int) error {
	if driverVersion > 0 && libMajor > driverVersion/1000 {
		return fmt.Errorf("cuda: %s %d (%s) is newer than the driver's CUDA %s: use %s %d or older (set %s or LD_LIBRARY_PATH)",
			lib.Name, libMajor, path, cudaVersionString(driverVersion), lib.Name, driverVersion/1000, lib.Env)
	}
	return nil
}

// kernelTarget is what NVRTC compiles the kernels to for a device: a cubin
// for sm_Arch, or PTX for compute_Arch that the driver compiles for the
// device when loading it (Arch below the device's own architecture).
type kernelTarget struct {
	Arch  int
	Cubin bool
	Why   string
}

// chooseKernelTarget picks the target for a device of architecture sm
// (major·10 + minor) and an NVRTC that supports the architectures
// supported (nil: NVRTC cannot say, before 11.2): a cubin for the device's
// own architecture when NVRTC knows it; else PTX for the newest
// architecture NVRTC knows below it (explicitly, with the reason, never as
// a silent fallback); an error when NVRTC knows none at or below it (a
// V100 with NVRTC 13, which dropped sm_70).
func chooseKernelTarget(sm int, supported []int, nvrtc string) (kernelTarget, error) {
	if supported == nil {
		return kernelTarget{Arch: sm, Cubin: true, Why: fmt.Sprintf("cubin for sm_%d (NVRTC %s cannot list its architectures)", sm, nvrtc)}, nil
	}
	if slices.Contains(supported, sm) {
		return kernelTarget{Arch: sm, Cubin: true, Why: fmt.Sprintf("cubin for the device's sm_%d", sm)}, nil
	}
	best := 0
	for _, a := range supported {
		if a < sm && a > best {
			best = a
		}
	}
	list := make([]string, len(supported))
	for i, a := range supported {
		list[i] = fmt.Sprintf("sm_%d", a)
	}
	if best == 0 {
		return kernelTarget{}, fmt.Errorf("cuda: NVRTC %s compiles for %s, none at or below this device's sm_%d: use an older NVRTC (RELLA_NVRTC; CUDA 12.x is the last for sm_70)",
			nvrtc, strings.Join(list, " "), sm)
	}
	return kernelTarget{Arch: best, Cubin: false, Why: fmt.Sprintf("PTX for compute_%d, which the driver compiles for sm_%d at load: NVRTC %s does not know sm_%d (it knows %s)",
		best, sm, nvrtc, sm, strings.Join(list, " "))}, nil
}
