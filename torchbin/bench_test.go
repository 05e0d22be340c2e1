package torchbin

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rella-project/rella/safetensors"
)

// TestLoadBenchmark compares reading a multi-GB fp16 checkpoint from a
// torch zip .bin against the same tensors in safetensors. It is a
// benchmark, not a check, and runs only when RELLA_BENCH_TORCHBIN names
// the number of LLaMA-7B-shaped decoder layers to write (5 layers + the
// embeddings and head make 2.3 GB per file):
//
//	RELLA_BENCH_TORCHBIN=5 go test ./torchbin -run TestLoadBenchmark -v -timeout 30m
//
// Each measurement is a child process that opens the file and converts
// every tensor to float32 (what the engines do), so its peak RSS is its
// own. Runs alternate between the formats; "cold" runs first evict the
// file from the page cache with posix_fadvise(DONTNEED). The files go to
// RELLA_BENCH_DIR (default: the system temp folder) and are removed after.
func TestLoadBenchmark(t *testing.T) {
	if os.Getenv(benchChildEnv) != "" {
		benchChild(t)
		return
	}
	layers, _ := strconv.Atoi(os.Getenv("RELLA_BENCH_TORCHBIN"))
	if layers <= 0 {
		t.Skip("set RELLA_BENCH_TORCHBIN=<layers> (5 gives 2.3 GB files) to run the load benchmark")
	}
	rounds := 3
	if r, err := strconv.Atoi(os.Getenv("RELLA_BENCH_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	dir, err := os.MkdirTemp(os.Getenv("RELLA_BENCH_DIR"), "rella-torchbin-bench-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	tensors, storages := benchTensors(layers)
	var size int64
	for _, s := range storages {
		size += int64(len(s.data))
	}
	binPath := filepath.Join(dir, "pytorch_model.bin")
	stPath := filepath.Join(dir, "model.safetensors")
	start := time.Now()
	writeZipFile(t, binPath, tensors, storages)
	st := make([]safetensors.Tensor, len(tensors))
	for i, tn := range tensors {
		st[i] = safetensors.Tensor{Name: tn.name, DType: safetensors.DTypeF16, Shape: tn.shape, Data: storages[i].data}
	}
	if err := safetensors.Write(stPath, st, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d tensors, %.2f GB per file, in %s", len(tensors), float64(size)/1e9, time.Since(start).Round(time.Millisecond))

	type result struct {
		wall   time.Duration
		cpu    time.Duration // user + system
		rssKB  int64
		sum    float64
		format string
	}
	run := func(format, path string, cold bool) result {
		if cold {
			evict(t, path)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestLoadBenchmark$")
		cmd.Env = append(os.Environ(), benchChildEnv+"="+format+":"+path)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child %s: %v\n%s", format, err, out)
		}
		var r struct {
			Seconds float64
			Sum     float64
		}
		line := out
		if i := strings.Index(string(out), "{"); i >= 0 {
			line = out[i:]
			if j := strings.Index(string(line), "\n"); j >= 0 {
				line = line[:j]
			}
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("child %s output %q: %v", format, out, err)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		return result{wall: time.Duration(r.Seconds * float64(time.Second)), cpu: cpu, rssKB: ru.Maxrss, sum: r.Sum, format: format}
	}
	for _, cold := range []bool{false, true} {
		label := "warm"
		if cold {
			label = "cold"
		}
		run("bin", binPath, cold) // one untimed pass each, so both start alike
		run("safetensors", stPath, cold)
		for i := 0; i < rounds; i++ {
			order := [][2]string{{"bin", binPath}, {"safetensors", stPath}}
			if i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			var rs [2]result
			for k, o := range order {
				rs[k] = run(o[0], o[1], cold)
			}
			b, s := rs[0], rs[1]
			if b.format != "bin" {
				b, s = s, b
			}
			if b.sum != s.sum {
				t.Fatalf("checksums differ: bin %v, safetensors %v", b.sum, s.sum)
			}
			t.Logf("%s round %d: bin %.2fs (cpu %.2fs) %.0f MB peak RSS; safetensors %.2fs (cpu %.2fs) %.0f MB; wall ratio %.3f, cpu ratio %.3f, RSS ratio %.3f",
				label, i+1, b.wall.Seconds(), b.cpu.Seconds(), float64(b.rssKB)/1024, s.wall.Seconds(), s.cpu.Seconds(), float64(s.rssKB)/1024,
				b.wall.Seconds()/s.wall.Seconds(), b.cpu.Seconds()/s.cpu.Seconds(), float64(b.rssKB)/float64(s.rssKB))
		}
	}
}

const benchChildEnv = "RELLA_BENCH_TORCHBIN_CHILD"

// benchChild opens one file and converts every tensor to float32,
// printing the elapsed seconds and a checksum as JSON.
func benchChild(t *testing.T) {
	format, path, _ := strings.Cut(os.Getenv(benchChildEnv), ":")
	start := time.Now()
	var names []string
	var read func(string) ([]float32, error)
	switch format {
	case "bin":
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		names, read = f.Names(), f.Float32s
	case "safetensors":
		f, err := safetensors.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		names, read = f.Names(), f.Float32s
	default:
		t.Fatalf("unknown format %q", format)
	}
	sum := 0.0
	for _, n := range names {
		v, err := read(n)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(v); i += 4099 {
			sum += float64(v[i])
		}
	}
	fmt.Printf("{\"Seconds\": %g, \"Sum\": %g}\n", time.Since(start).Seconds(), sum)
}

// evict drops path's pages from the page cache (this file only).
func evict(t *testing.T, path string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// benchTensors returns LLaMA-7B-shaped fp16 tensors (embeddings, head,
// norms and layers decoder layers), each on its own storage, filled from a
// shared pseudo-random pool so writing them needs little memory.
func benchTensors(layers int) ([]wTensor, []wStorage) {
	const d, ff, vocab = 4096, 11008, 32000
	pool := make([]byte, 2*(vocab*d+1<<20))
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < len(pool); i += 2 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		// finite halves in [-2, 2]
		binary.LittleEndian.PutUint16(pool[i:], safetensors.F32ToF16(float32(int64(x>>40)%4096)/1024-2))
	}
	var tensors []wTensor
	var storages []wStorage
	add := func(name string, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		off := (len(storages) * 4099 * 2) % (len(pool) - 2*n + 1)
		off -= off % 2
		key := strconv.Itoa(len(storages))
		storages = append(storages, wStorage{key: key, dtype: safetensors.DTypeF16, data: pool[off : off+2*n]})
		tensors = append(tensors, wTensor{name: name, storage: key, shape: shape, stride: contiguousStride(shape)})
	}
	add("model.embed_tokens.weight", vocab, d)
	for i := 0; i < layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", d)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "o_proj"} {
			add(p+"self_attn."+n+".weight", d, d)
		}
		add(p+"mlp.gate_proj.weight", ff, d)
		add(p+"mlp.up_proj.weight", ff, d)
		add(p+"mlp.down_proj.weight", d, ff)
		add(p+"post_attention_layernorm.weight", d)
	}
	add("model.norm.weight", d)
	add("lm_head.weight", vocab, d)
	return tensors, storages
}
