package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLibMajors(t *testing.T) {
	for _, c := range []struct {
		driver int
		want   []int
	}{{13000, []int{13, 12, 11}}, {12040, []int{12, 11}}, {12090, []int{12, 11}}, {11080, []int{11}}, {0, []int{13, 12, 11}}} {
		got, err := libMajors(c.driver)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("driver %d: majors %v, %v; want %v", c.driver, got, err, c.want)
		}
	}
	if _, err := libMajors(10020); err == nil || !strings.Contains(err.Error(), "CUDA 10.2") {
		t.Errorf("driver 10.2: got %v, want an error naming CUDA 10.2", err)
	}
	// Driver 12.x: cuBLAS .12 then .11, never .13; NVRTC 11 by its minor sonames.
	ms, _ := libMajors(12040)
	if got, want := libCUBLAS.sonames(ms), []string{"libcublas.so.12", "libcublas.so.11"}; !slices.Equal(got, want) {
		t.Errorf("cuBLAS sonames for driver 12.4: %v, want %v", got, want)
	}
	if got, want := libNVRTC.sonames(ms), []string{"libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so.11.1", "libnvrtc.so.11.0"}; !slices.Equal(got, want) {
		t.Errorf("NVRTC sonames for driver 12.4: %v, want %v", got, want)
	}
	for name, want := range map[string]int{"libcublas.so.12": 12, "/x/libcublas.so.12.4.5.8": 12, "libnvrtc.so.11.2": 11, "libcublas.so": 0, "libcublasLt.so.x": 0} {
		if got := sonameMajor(name); got != want {
			t.Errorf("sonameMajor(%q) = %d, want %d", name, got, want)
		}
	}
}

// TestPlanLib builds a machine in a temporary folder (a CUDA 12.4 and a
// CUDA 13.0 toolkit, a virtualenv with NVIDIA's cuBLAS 12 wheel) and checks
// the order in which cuBLAS is tried for drivers 12.4 and 13.0, and the
// error that lists every attempt.
func TestPlanLib(t *testing.T) {
	tmp := t.TempDir()
	files := []string{
		"cuda-12.4/lib64/libcublas.so.12",
		"cuda-13.0/lib64/libcublas.so.13",
		"venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublas.so.12",
		"venv/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
	}
	for _, f := range files {
		p := filepath.Join(tmp, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"CUDA_HOME": filepath.Join(tmp, "cuda-12.4"), "CUDA_PATH": filepath.Join(tmp, "cuda-13.0"),
		"VIRTUAL_ENV": filepath.Join(tmp, "venv")}
	glob := func(p string) ([]string, error) { // only this test's machine, not the real one's folders
		if !strings.HasPrefix(p, tmp) {
			return nil, nil
		}
		return filepath.Glob(p)
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	dirs := libSearchDirs(func(k string) string { return env[k] }, glob)
	wheel := filepath.Join(tmp, "venv/lib/python3.12/site-packages/nvidia/cublas/lib")
	for _, d := range []string{filepath.Join(tmp, "cuda-12.4/lib64"), filepath.Join(tmp, "cuda-13.0/lib64"), wheel} {
		if !slices.Contains(dirs, d) {
			t.Errorf("search folders %v lack %s", dirs, d)
		}
	}
	paths := func(p libPlan) []string {
		var s []string
		for _, a := range p.Attempts {
			s = append(s, a.Path)
		}
		return s
	}

	p, err := planLib(libCUBLAS, 12040, "", dirs, exists, glob)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"libcublas.so.12", filepath.Join(tmp, "cuda-12.4/lib64/libcublas.so.12"), filepath.Join(wheel, "libcublas.so.12"), "libcublas.so.11"}
	if got := paths(p); !slices.Equal(got, want) {
		t.Errorf("driver 12.4: attempts\n  %v\nwant\n  %v", got, want)
	}
	if want := []string{filepath.Join(tmp, "cuda-13.0/lib64/libcublas.so.13")}; !slices.Equal(p.Skipped, want) {
		t.Errorf("driver 12.4: skipped %v, want %v", p.Skipped, want)
	}
	var failed []libFailure
	for _, a := range p.Attempts {
		failed = append(failed, libFailure{a, fmt.Sprintf("%s: cannot open shared object file", filepath.Base(a.Path))})
	}
	msg := p.error(failed).Error()
	for _, s := range append(want, "CUDA 12.4", "never newer", "cuda-13.0/lib64/libcublas.so.13: found, not tried (newer than the driver's CUDA 12.4)",
		"loader search", "folder of libcublas.so.12", "RELLA_CUBLAS", wheel) {
		if !strings.Contains(msg, s) {
			t.Errorf("error lacks %q:\n%s", s, msg)
		}
	}

	p, _ = planLib(libCUBLAS, 13000, "/opt/mine/libcublas.so.13", dirs, exists, glob)
	want = []string{"/opt/mine/libcublas.so.13", "libcublas.so.13", filepath.Join(tmp, "cuda-13.0/lib64/libcublas.so.13"),
		"libcublas.so.12", filepath.Join(tmp, "cuda-12.4/lib64/libcublas.so.12"), filepath.Join(wheel, "libcublas.so.12"), "libcublas.so.11"}
	if got := paths(p); !slices.Equal(got, want) || len(p.Skipped) != 0 {
		t.Errorf("driver 13.0 with RELLA_CUBLAS: attempts\n  %v\nwant\n  %v (skipped %v)", got, want, p.Skipped)
	}
	// A library from $RELLA_CUBLAS is checked after it opens.
	if err := checkLibMajor(libCUBLAS, "/opt/mine/libcublas.so.13", 13, 12040); err == nil || !strings.Contains(err.Error(), "newer than the driver's CUDA 12.4") {
		t.Errorf("cuBLAS 13 on driver 12.4: got %v", err)
	}
	if err := checkLibMajor(libCUBLAS, "x", 12, 13000); err != nil {
		t.Errorf("cuBLAS 12 on driver 13.0: %v", err)
	}
}

func TestChooseKernelTarget(t *testing.T) {
	nvrtc12 := []int{50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90}
	nvrtc13 := []int{75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121}
	for _, c := range []struct {
		sm        int
		supported []int
		arch      int
		cubin     bool
		why       string
	}{
		{90, nvrtc12, 90, true, "cubin for the device's sm_90"},
		{70, nvrtc12, 70, true, "sm_70"},
		{100, nvrtc12, 90, false, "PTX for compute_90, which the driver compiles for sm_100 at load: NVRTC 12.4 does not know sm_100"},
		{90, nil, 90, true, "cannot list"},
	} {
		got, err := chooseKernelTarget(c.sm, c.supported, "12.4")
		if err != nil || got.Arch != c.arch || got.Cubin != c.cubin || !strings.Contains(got.Why, c.why) {
			t.Errorf("sm_%d: %+v, %v; want arch %d cubin %v, reason with %q", c.sm, got, err, c.arch, c.cubin, c.why)
		}
	}
	if _, err := chooseKernelTarget(70, nvrtc13, "13.0"); err == nil || !strings.Contains(err.Error(), "sm_70") {
		t.Errorf("V100 with NVRTC 13: got %v, want an error naming sm_70", err)
	}
}
