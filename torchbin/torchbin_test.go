package torchbin

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rella-project/rella/internal/testenv"
	"github.com/rella-project/rella/safetensors"
)

// encode writes v in dtype as little-endian bytes.
func encode(dtype safetensors.DType, v []float64) []byte {
	b := make([]byte, len(v)*dtype.Size())
	for i, x := range v {
		switch dtype {
		case safetensors.DTypeF16:
			binary.LittleEndian.PutUint16(b[2*i:], safetensors.F32ToF16(float32(x)))
		case safetensors.DTypeBF16:
			binary.LittleEndian.PutUint16(b[2*i:], safetensors.F32ToBF16(float32(x)))
		case safetensors.DTypeF32:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
		case safetensors.DTypeF64:
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
		case safetensors.DTypeI64:
			binary.LittleEndian.PutUint64(b[8*i:], uint64(int64(x)))
		case safetensors.DTypeI32:
			binary.LittleEndian.PutUint32(b[4*i:], uint32(int32(x)))
		case safetensors.DTypeU8:
			b[i] = byte(x)
		}
	}
	return b
}

// ramp returns n small values exactly representable in every float dtype.
func ramp(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(i%61-30) / 8
	}
	return v
}

// Every fixture tensor written by real torch.save holds exactly the bytes
// of the same tensor in its safetensors twin; the tied fixture's lm_head
// shares embed_tokens' storage.
func TestFixturesMatchSafetensorsTwin(t *testing.T) {
	for _, dir := range []string{"fixtures/stories260K-bin/fp16-sharded", "fixtures/tiny-vicuna-bin"} {
		dir := testenv.Shared(t, dir)
		ref, err := safetensors.Open(filepath.Join(dir, "model.fp16.safetensors.ref"))
		if err != nil {
			t.Fatal(err)
		}
		defer ref.Close()
		shards, _ := filepath.Glob(filepath.Join(dir, "pytorch_model-*.bin"))
		if len(shards) != 2 {
			t.Fatalf("%s: %d shards, want 2", dir, len(shards))
		}
		seen := map[string]bool{}
		for _, p := range shards {
			f, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Format() != "zip" {
				t.Errorf("%s: format %s", p, f.Format())
			}
			for _, n := range f.Names() {
				seen[n] = true
				info, _ := f.Info(n)
				got, err := f.Bytes(n)
				if err != nil {
					t.Fatal(err)
				}
				want, err := ref.Bytes(n)
				if n == "lm_head.weight" && err != nil { // tied: the twin holds it once
					want, err = ref.Bytes("model.embed_tokens.weight")
				}
				if err != nil {
					t.Fatalf("%s: %v", n, err)
				}
				ri, _ := ref.Info(n)
				if info.DType != safetensors.DTypeF16 || (ri.Shape != nil && !slices.Equal(info.Shape, ri.Shape)) || !bytes.Equal(got, want) {
					t.Errorf("%s: %s %v differs from the twin's %v", n, info.DType, info.Shape, ri.Shape)
				}
			}
		}
		for _, n := range ref.Names() {
			if !seen[n] {
				t.Errorf("%s: tensor %s of the twin is in no shard", dir, n)
			}
		}
	}
	// The tied fixture: lm_head.weight and embed_tokens are one storage.
	dir := testenv.Shared(t, "fixtures/stories260K-bin/fp16-sharded")
	f, err := Open(filepath.Join(dir, "pytorch_model-00001-of-00002.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, _ := f.Info("lm_head.weight")
	b, _ := f.Info("model.embed_tokens.weight")
	if a.Storage != b.Storage || a.Offset != b.Offset {
		t.Errorf("lm_head.weight (storage %s at %d) does not share embed_tokens' (storage %s at %d)", a.Storage, a.Offset, b.Storage, b.Offset)
	}
}

// The float32 fixture holds the same values as stories260K's safetensors.
func TestF32FixtureMatchesStories260K(t *testing.T) {
	bin := testenv.Shared(t, "fixtures/stories260K-bin/f32-single/pytorch_model.bin")
	st := testenv.Shared(t, "fixtures/stories260K/model.safetensors")
	f, err := Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref, err := safetensors.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, n := range ref.Names() {
		want, _ := ref.Float32s(n)
		got, err := f.Float32s(n)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s differs", n)
		}
	}
}

// Every storage dtype round-trips through both layouts.
func TestDTypesBothFormats(t *testing.T) {
	dtypes := []safetensors.DType{safetensors.DTypeF16, safetensors.DTypeBF16, safetensors.DTypeF32, safetensors.DTypeF64, safetensors.DTypeI64, safetensors.DTypeI32, safetensors.DTypeU8}
	vals := ramp(12)
	var storages []wStorage
	var tensors []wTensor
	for i, dt := range dtypes {
		v := vals
		if dt == safetensors.DTypeU8 {
			v = make([]float64, 12)
			for k := range v {
				v[k] = float64(k * 7)
			}
		}
		key := string(rune('a' + i))
		storages = append(storages, wStorage{key: key, dtype: dt, data: encode(dt, v)})
		tensors = append(tensors, wTensor{name: "t." + string(dt), storage: key, shape: []int{3, 4}, stride: []int{4, 1}})
	}
	for _, format := range []string{"zip", "legacy"} {
		p := filepath.Join(t.TempDir(), "m.bin")
		if format == "zip" {
			writeZipFile(t, p, tensors, storages)
		} else {
			writeLegacyFile(t, p, tensors, storages)
		}
		f, err := Open(p)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if f.Format() != format {
			t.Errorf("format %s, want %s", f.Format(), format)
		}
		for i, dt := range dtypes {
			n := tensors[i].name
			info, ok := f.Info(n)
			if !ok || info.DType != dt || !slices.Equal(info.Shape, []int{3, 4}) {
				t.Errorf("%s %s: info %+v", format, n, info)
				continue
			}
			b, _ := f.Bytes(n)
			if !bytes.Equal(b, storages[i].data) {
				t.Errorf("%s %s: bytes differ", format, n)
			}
			if dt == safetensors.DTypeI64 || dt == safetensors.DTypeI32 || dt == safetensors.DTypeU8 {
				if _, err := f.Float32s(n); err == nil {
					t.Errorf("%s %s: Float32s of an integer tensor succeeded", format, n)
				}
				continue
			}
			got, err := f.Float32s(n)
			if err != nil {
				t.Fatal(err)
			}
			for k, x := range got {
				if float64(x) != vals[k] {
					t.Fatalf("%s %s[%d] = %v, want %v", format, n, k, x, vals[k])
				}
			}
		}
		f.Close()
	}
}

// Views: a storage offset, two tensors on one storage, a transposed
// (non-contiguous) tensor gathered in row-major order, and legacy view
// storages.
func TestViews(t *testing.T) {
	vals := ramp(40)
	data := encode(safetensors.DTypeF32, vals)
	storages := []wStorage{{key: "0", dtype: safetensors.DTypeF32, data: data}}
	tensors := []wTensor{
		{name: "whole", storage: "0", shape: []int{5, 8}, stride: []int{8, 1}},
		{name: "tail", storage: "0", offset: 16, shape: []int{3, 8}, stride: []int{8, 1}},
		{name: "transposed", storage: "0", offset: 8, shape: []int{8, 4}, stride: []int{1, 8}},
		{name: "every-other", storage: "0", offset: 1, shape: []int{2, 3}, stride: []int{16, 2}},
	}
	// want computes element [i][j] of a 2-D view independently.
	want := func(tn wTensor) []float32 {
		var out []float32
		for i := 0; i < tn.shape[0]; i++ {
			for j := 0; j < tn.shape[1]; j++ {
				out = append(out, float32(vals[tn.offset+i*tn.stride[0]+j*tn.stride[1]]))
			}
		}
		return out
	}
	for _, format := range []string{"zip", "legacy"} {
		p := filepath.Join(t.TempDir(), "m.bin")
		if format == "zip" {
			writeZipFile(t, p, tensors, storages)
		} else {
			writeLegacyFile(t, p, tensors, storages)
		}
		f, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range tensors {
			got, err := f.Float32s(tn.name)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want(tn)) {
				t.Errorf("%s %s: got %v, want %v", format, tn.name, got, want(tn))
			}
			info, _ := f.Info(tn.name)
			if c := info.Contiguous(); c != (tn.name == "whole" || tn.name == "tail") {
				t.Errorf("%s %s: Contiguous() = %v", format, tn.name, c)
			}
		}
		f.Close()
	}

	// Legacy view storages: "v" is elements [8, 24) of root "r".
	p := filepath.Join(t.TempDir(), "views.bin")
	vs := []wStorage{
		{key: "r", dtype: safetensors.DTypeF32, data: data},
		{key: "v", dtype: safetensors.DTypeF32, data: data[8*4 : 24*4], viewOf: "r", viewOffset: 8},
	}
	vt := []wTensor{{name: "on-view", storage: "v", offset: 4, shape: []int{3, 4}, stride: []int{4, 1}}}
	writeLegacyFile(t, p, vt, vs)
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := f.Float32s("on-view")
	if !slices.Equal(got, want(wTensor{offset: 12, shape: []int{3, 4}, stride: []int{4, 1}})) {
		t.Errorf("legacy view storage: got %v", got)
	}
}

// A pickle naming any global outside the allowed few is refused by name,
// before anything is called.
func TestForeignGlobalRefused(t *testing.T) {
	cases := map[string]func(p *pickler){
		"posix.system": func(p *pickler) {
			p.global("posix", "system")
			p.str("echo pwned > /tmp/rella-pwned")
			p.op(0x85, 'R')
		},
		"builtins.eval": func(p *pickler) { // via STACK_GLOBAL, protocol 4's spelling
			p.str("builtins")
			p.str("eval")
			p.op(0x93)
			p.str("1")
			p.op(0x85, 'R')
		},
		"torch._utils._rebuild_qtensor": func(p *pickler) {
			p.global("torch._utils", "_rebuild_qtensor")
			p.op(')', 'R')
		},
	}
	for name, build := range cases {
		var p pickler
		p.op(0x80, 2, '}', '(')
		p.str("x")
		build(&p)
		p.op('u', '.')
		path := filepath.Join(t.TempDir(), "evil.bin")
		fh, _ := os.Create(path)
		writeZip(t, fh, "evil", p.Bytes(), nil)
		fh.Close()
		_, err := Open(path)
		if err == nil || !strings.Contains(err.Error(), "refused global "+name) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: got %v, want a refusal naming it and the file", name, err)
		}
	}
	if _, err := os.Stat("/tmp/rella-pwned"); err == nil {
		t.Fatal("the refused pickle ran a command")
	}
}

// Damage: each error names the file and the tensor.
func TestDamageNamed(t *testing.T) {
	data := encode(safetensors.DTypeF16, ramp(32))
	good := func() []wStorage {
		return []wStorage{
			{key: "0", dtype: safetensors.DTypeF16, data: data},
			{key: "1", dtype: safetensors.DTypeF16, data: data[:16]},
		}
	}
	tensors := []wTensor{
		{name: "model.embed_tokens.weight", storage: "0", shape: []int{4, 8}, stride: []int{8, 1}},
		{name: "model.norm.weight", storage: "1", shape: []int{8}, stride: []int{1}},
	}
	cases := []struct {
		name   string
		write  func(p string)
		tensor string
		want   string
	}{
		{"compressed entry", func(p string) {
			s := good()
			s[1].compress = true
			writeZipFile(t, p, tensors, s)
		}, "model.norm.weight", "compressed"},
		{"missing storage", func(p string) {
			s := good()
			s[0].omit = true
			writeZipFile(t, p, tensors, s)
		}, "model.embed_tokens.weight", "missing"},
		{"short storage", func(p string) {
			s := good()
			s[0].data = data[:40] // 20 elements for a 4x8 tensor
			writeZipFile(t, p, tensors, s)
		}, "model.embed_tokens.weight", "storage \"0\" holds 20"},
		{"shape past storage", func(p string) {
			tt := slices.Clone(tensors)
			tt[1] = wTensor{name: "model.norm.weight", storage: "1", offset: 2, shape: []int{8}, stride: []int{1}}
			writeZipFile(t, p, tt, good())
		}, "model.norm.weight", "needs 10 elements"},
		{"legacy truncated", func(p string) {
			writeLegacyFile(t, p, tensors, good())
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-10], 0o644)
		}, "model.norm.weight", "truncated"},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "pytorch_model.bin")
		c.write(p)
		_, err := Open(p)
		if err == nil {
			t.Errorf("%s: opened", c.name)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, p) || !strings.Contains(msg, c.tensor) || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %q does not name the file, tensor %q and %q", c.name, msg, c.tensor, c.want)
		}
	}

	// A truncated zip loses its directory: the error names the file and says so
	// (model.Load adds the tensors the index puts in it).
	p := filepath.Join(t.TempDir(), "pytorch_model.bin")
	writeZipFile(t, p, tensors, good())
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)/2], 0o644)
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated zip: %v", err)
	}
}

// Malformed pickles give errors, never panics or huge allocations.
func TestMalformedPickles(t *testing.T) {
	cases := map[string][]byte{
		"no stop":          {0x80, 2, '}'},
		"huge BINUNICODE8": append([]byte{0x80, 4, 0x8d}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '.'),
		"huge BINBYTES":    {0x80, 3, 'B', 0xff, 0xff, 0xff, 0x7f, '.'},
		"unknown opcode":   {0x80, 2, 0xff, '.'},
		"empty LONG1":      {0x80, 2, 0x8a, 0, '.'},
		"stack underflow":  {0x80, 2, 'R', '.'},
		"not a dict":       {0x80, 2, 'K', 1, '.'},
		"text persid":      {0x80, 2, 'P', 'x', '\n', '.'},
		"extension":        {0x80, 2, 0x82, 1, '.'},
	}
	for name, pkl := range cases {
		var buf bytes.Buffer
		writeZip(t, &buf, "m", pkl, nil)
		p := filepath.Join(t.TempDir(), "m.bin")
		os.WriteFile(p, buf.Bytes(), 0o644)
		if _, err := Open(p); err == nil {
			t.Errorf("%s: opened", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// Random corruption of a valid file's pickle never panics.
	var good bytes.Buffer
	st := []wStorage{{key: "0", dtype: safetensors.DTypeF32, data: encode(safetensors.DTypeF32, ramp(6))}}
	pkl := stateDictPickle([]wTensor{{name: "w", storage: "0", shape: []int{2, 3}, stride: []int{3, 1}}}, st, false)
	writeZip(t, &good, "m", pkl, st)
	for i := range pkl {
		for _, x := range []byte{0, 0xff, '.', 'R', 0x8d} {
			bad := slices.Clone(pkl)
			bad[i] = x
			var buf bytes.Buffer
			writeZip(t, &buf, "m", bad, st)
			p := filepath.Join(t.TempDir(), "m.bin")
			os.WriteFile(p, buf.Bytes(), 0o644)
			if f, err := Open(p); err == nil {
				for _, n := range f.Names() {
					f.Float32s(n)
				}
				f.Close()
			}
		}
	}
}

// The writer's zip layout is torch's: stored entries under one archive folder.
func TestWriterLayout(t *testing.T) {
	var buf bytes.Buffer
	st := []wStorage{{key: "0", dtype: safetensors.DTypeF16, data: make([]byte, 8)}}
	writeZip(t, &buf, "arch", stateDictPickle([]wTensor{{name: "w", storage: "0", shape: []int{4}, stride: []int{1}}}, st, false), st)
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, []string{"arch/data.pkl", "arch/byteorder", "arch/data/0", "arch/version"}) {
		t.Errorf("entries %v", names)
	}
}

// torch.save(model.state_dict()) pickles an OrderedDict carrying a
// _metadata attribute (set through BUILD); it reads like a plain dict.
func TestOrderedDictWithMetadata(t *testing.T) {
	st := []wStorage{{key: "0", dtype: safetensors.DTypeBF16, data: encode(safetensors.DTypeBF16, ramp(6))}}
	plain := stateDictPickle([]wTensor{{name: "w", storage: "0", shape: []int{2, 3}, stride: []int{3, 1}}}, st, false)
	// plain is PROTO 2, '}', '(' items 'u', '.': make the dict an OrderedDict
	// and add its state as torch does.
	var p pickler
	p.op(0x80, 2)
	p.global("collections", "OrderedDict")
	p.op(')', 'R')
	p.Write(plain[3 : len(plain)-1])
	p.op('}', '(')
	p.str("_metadata")
	p.global("collections", "OrderedDict")
	p.op(')', 'R', '(')
	p.str("")
	p.op('}', '(')
	p.str("version")
	p.int(1)
	p.op('u', 'u', 'u', 'b', '.')
	path := filepath.Join(t.TempDir(), "pytorch_model.bin")
	fh, _ := os.Create(path)
	writeZip(t, fh, "pytorch_model", p.Bytes(), st)
	fh.Close()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := f.Float32s("w")
	if err != nil || len(f.Names()) != 1 {
		t.Fatalf("names %v, %v", f.Names(), err)
	}
	for i, x := range got {
		if float64(x) != ramp(6)[i] {
			t.Fatalf("w[%d] = %v", i, x)
		}
	}
}

// Real torch.save output in both layouts and every pickle protocol: the
// single-tensor files gopickle's test data holds (written by PyTorch with
// _use_new_zipfile_serialization False and True, protocols 1-5).
func TestRealTorchSingleTensorFiles(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/nlpodyssey/gopickle").Output()
	dir := filepath.Join(strings.TrimSpace(string(out)), "pytorch", "testdata")
	if _, serr := os.Stat(dir); err != nil || serr != nil {
		t.Skipf("gopickle's test data is not in the module cache: %v %v", err, serr)
	}
	vals := []float32{1.2, -3.4, 5.6, -7.8}
	dtypes := map[string]safetensors.DType{"float16": safetensors.DTypeF16, "bfloat16": safetensors.DTypeBF16, "float32": safetensors.DTypeF32, "float64": safetensors.DTypeF64}
	checked := 0
	for name, dt := range dtypes {
		for proto := 1; proto <= 5; proto++ {
			for _, zipped := range []bool{false, true} {
				file := fmt.Sprintf("tensor_%s_proto%d.pt", name, proto)
				format := "legacy"
				if zipped {
					file = strings.TrimSuffix(file, ".pt") + "_zip.pt"
					format = "zip"
				}
				f, err := open(filepath.Join(dir, file), true)
				if err != nil {
					t.Errorf("%s: %v", file, err)
					continue
				}
				info, _ := f.Info("")
				got, err := f.Float32s("")
				if err != nil || info.DType != dt || f.Format() != format || !slices.Equal(info.Shape, []int{4}) {
					t.Errorf("%s: %s %s %v, %v", file, f.Format(), info.DType, info.Shape, err)
				}
				for i, v := range vals {
					want := v
					switch dt {
					case safetensors.DTypeF16:
						want = safetensors.F16ToF32(safetensors.F32ToF16(v))
					case safetensors.DTypeBF16:
						want = safetensors.BF16ToF32(safetensors.F32ToBF16(v))
					}
					if got[i] != want {
						t.Errorf("%s[%d] = %v, want %v", file, i, got[i], want)
					}
				}
				f.Close()
				checked++
			}
		}
	}
	t.Logf("%d real torch files read", checked)
	// A bare tensor is not a state_dict: Open refuses it.
	if _, err := Open(filepath.Join(dir, "tensor_float32_proto2_zip.pt")); err == nil || !strings.Contains(err.Error(), "want a state_dict") {
		t.Errorf("bare tensor through Open: %v", err)
	}
	// Storage types a LLaMA never holds are refused by name.
	if _, err := Open(filepath.Join(dir, "tensor_bool_proto2.pt")); err == nil || !strings.Contains(err.Error(), "torch.BoolStorage is not supported") {
		t.Errorf("bool storage: %v", err)
	}
}

// A repeating view (stride 0, as expand() makes) is refused by name, so a
// crafted shape cannot ask for more memory than its storage holds.
func TestRepeatingViewRefused(t *testing.T) {
	st := []wStorage{{key: "0", dtype: safetensors.DTypeF32, data: encode(safetensors.DTypeF32, ramp(4))}}
	p := filepath.Join(t.TempDir(), "m.bin")
	writeZipFile(t, p, []wTensor{{name: "expanded", storage: "0", shape: []int{1 << 30, 1 << 30}, stride: []int{0, 0}}}, st)
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), `tensor "expanded"`) || !strings.Contains(err.Error(), "repeating view") {
		t.Errorf("got %v", err)
	}
}
