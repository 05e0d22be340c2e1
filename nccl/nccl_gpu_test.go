//go:build rellagpu

package nccl

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
)

// kitPath is env's value, or the kit path under the repository when that
// exists; "" when neither.
func kitPath(t *testing.T, env, rel string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	p := filepath.Join(testenv.RepoRoot(t), ".kit", rel)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// TestABIHeader compiles nccl_abi.h after a real nccl.h (RELLA_NCCL_INCLUDE,
// or .kit/nccl/include: the header of Debian's libnccl-dev): a prototype
// that disagrees with NCCL's is a "conflicting types" error, a value that
// differs fails a static assertion. A copy with one argument type changed
// must fail, so the check is known to bite.
func TestABIHeader(t *testing.T) {
	inc := kitPath(t, "RELLA_NCCL_INCLUDE", "nccl/include")
	if inc == "" {
		t.Skip("no nccl.h: set RELLA_NCCL_INCLUDE (e.g. extracted from Debian's libnccl-dev)")
	}
	cudaInc := kitPath(t, "RELLA_CUDA_INCLUDE", "include")
	if cudaInc == "" {
		t.Skip("no CUDA headers: run scripts/build-gpu.sh")
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	// nccl.h includes cuda_runtime.h, which the kit lacks; the types NCCL
	// takes from it (cudaStream_t) are in driver_types.h.
	stub := t.TempDir()
	if err := os.WriteFile(filepath.Join(stub, "cuda_runtime.h"), []byte("#include <driver_types.h>\n#define CUDART_VERSION 11080\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	compile := func(header string) (string, error) {
		out, err := exec.Command(cc, "-fsyntax-only", "-I"+stub, "-I"+cudaInc, "-I"+inc, "-include", "nccl.h", "-x", "c", header).CombinedOutput()
		return string(out), err
	}
	if out, err := compile("nccl_abi.h"); err != nil {
		t.Fatalf("nccl_abi.h disagrees with %s/nccl.h: %v\n%s", inc, err, out)
	}
	src, err := os.ReadFile("nccl_abi.h")
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(src, []byte("void* recvbuff, size_t count"), []byte("void* recvbuff, int count"), 1)
	if bytes.Equal(bad, src) {
		t.Fatal("nccl_abi.h no longer declares ncclAllReduce's count as size_t")
	}
	p := filepath.Join(stub, "bad_abi.h")
	os.WriteFile(p, bad, 0o644)
	if out, err := compile(p); err == nil || !strings.Contains(out, "ncclAllReduce") {
		t.Fatalf("a wrong ncclAllReduce prototype compiled against nccl.h: %v\n%s", err, out)
	}
}

// shimSymbols is the list of entry points shim.c looks up (NCCL_FNS).
func shimSymbols(t *testing.T) []string {
	src, err := os.ReadFile("shim.c")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)#define NCCL_FNS\(X\)(.*?)\n\n`).FindSubmatch(src)
	if m == nil {
		t.Fatal("no NCCL_FNS list in shim.c")
	}
	var names []string
	for _, x := range regexp.MustCompile(`X\((\w+)\)`).FindAllSubmatch(m[1], -1) {
		names = append(names, string(x[1]))
	}
	if len(names) < 8 {
		t.Fatalf("NCCL_FNS lists %d names: %v", len(names), names)
	}
	return names
}

// nccLib is RELLA_NCCL_LIB, or .kit/nccl/lib/libnccl.so.2 (from Debian's
// libnccl2), or "".
func ncclLib(t *testing.T) string { return kitPath(t, "RELLA_NCCL_LIB", "nccl/lib/libnccl.so.2") }

// TestExports reads a real libnccl.so.2's dynamic symbol table (no loading,
// so a library built for a newer glibc than this machine's still counts)
// and requires every entry point shim.c looks up.
func TestExports(t *testing.T) {
	lib := ncclLib(t)
	if lib == "" {
		t.Skip("no libnccl.so.2: set RELLA_NCCL_LIB")
	}
	f, err := elf.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section != elf.SHN_UNDEF {
			have[s.Name] = true
		}
	}
	for _, name := range append(shimSymbols(t), "ncclGetLastError") {
		if !have[name] {
			t.Errorf("%s does not export %s", lib, name)
		}
	}
}

// TestLibrary loads a real libnccl.so.2 (RELLA_NCCL_LIB, the kit's, else
// the system's) and calls what works without a GPU; it skips where the
// library cannot be loaded here.
func TestLibrary(t *testing.T) {
	if err := Open(filepath.Join(t.TempDir(), "libnccl.so.2")); err == nil || !strings.Contains(err.Error(), "libnccl.so.2") {
		t.Fatalf("Open of a missing library: %v", err)
	}
	lib := ncclLib(t)
	if lib == "" {
		lib = DefaultLibrary
	}
	missing, err := CheckSymbols(lib)
	if err != nil {
		t.Skipf("cannot load NCCL here: %v", err)
	}
	if len(missing) > 0 {
		t.Fatalf("%s lacks %v", lib, missing)
	}
	if err := Open(lib); err != nil {
		t.Fatal(err)
	}
	v, err := Version()
	if err != nil || v < 2000 {
		t.Fatalf("Version = %d, %v", v, err)
	}
	t.Logf("%s: NCCL version code %d", lib, v)
	if _, err := InitRank(2, UniqueID{}, 2); err == nil || !strings.Contains(err.Error(), "rank 2 of 2") {
		t.Errorf("InitRank with rank 2 of 2: %v", err)
	}
	// ncclGetUniqueId needs no GPU in recent NCCL (it picks a network
	// interface and opens the bootstrap socket); on a machine without a
	// driver it may still fail: then the error must be NCCL's, named.
	id, err := GetUniqueID()
	if err != nil {
		if _, ok := err.(*Error); !ok || !strings.Contains(err.Error(), "ncclGetUniqueId") {
			t.Fatalf("GetUniqueID: %v", err)
		}
		t.Logf("GetUniqueID without a GPU: %v", err)
		return
	}
	if id == (UniqueID{}) {
		t.Fatal("GetUniqueID returned an all-zero id")
	}
}
