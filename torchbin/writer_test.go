package torchbin

// A small writer of torch.save-style checkpoints for tests: it produces
// what torch's own serializer writes for a state_dict (a protocol-2
// pickle calling torch._utils._rebuild_tensor_v2 on persistent storage
// ids) in the zip or the legacy layout, so tests can cover variants the
// fixtures lack (legacy format, bf16, views, refused globals, damage).

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
	"math/big"
	"os"
	"sort"
	"testing"

	"github.com/rella-project/rella/safetensors"
)

// wStorage is one storage to write.
type wStorage struct {
	key      string
	dtype    safetensors.DType
	data     []byte
	compress bool // zip: deflate this entry (torch never does)
	omit     bool // zip: leave the entry out
	// legacy view: this storage is elements [viewOffset, viewOffset+numel) of viewOf.
	viewOf     string
	viewOffset int
}

// wTensor is one state_dict entry.
type wTensor struct {
	name          string
	storage       string
	offset        int
	shape, stride []int
}

// contiguousStride returns row-major strides for shape.
func contiguousStride(shape []int) []int {
	s := make([]int, len(shape))
	n := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = n
		n *= shape[i]
	}
	return s
}

// pickler writes protocol-2 opcodes.
type pickler struct{ bytes.Buffer }

func (p *pickler) op(b ...byte) { p.Write(b) }

func (p *pickler) str(s string) {
	p.op('X')
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
}

func (p *pickler) int(v int) {
	switch {
	case v >= 0 && v < 256:
		p.op('K', byte(v))
	case v >= 0 && v < 65536:
		p.op('M', byte(v), byte(v>>8))
	case v >= -1<<31 && v < 1<<31:
		p.op('J')
		binary.Write(p, binary.LittleEndian, int32(v))
	default:
		b := make([]byte, 8)
		binary.LittleEndian.PutUint64(b, uint64(v))
		p.op(0x8a, 8)
		p.Write(b)
	}
}

func (p *pickler) long(v *big.Int) { // non-negative, for the legacy magic
	b := v.Bytes()
	le := make([]byte, len(b)+1) // a zero sign byte
	for i := range b {
		le[i] = b[len(b)-1-i]
	}
	p.op(0x8a, byte(len(le)))
	p.Write(le)
}

func (p *pickler) global(module, name string) {
	p.op('c')
	p.WriteString(module + "\n" + name + "\n")
}

func (p *pickler) ints(v []int) {
	p.op('(')
	for _, x := range v {
		p.int(x)
	}
	p.op('t')
}

// stateDictPickle pickles tensors as torch.save does; legacy adds the
// sixth (view) field to each persistent id.
func stateDictPickle(tensors []wTensor, storages []wStorage, legacy bool) []byte {
	byKey := map[string]wStorage{}
	for _, s := range storages {
		byKey[s.key] = s
	}
	classes := map[safetensors.DType]string{}
	for name, dt := range storageClasses {
		classes[dt] = name
	}
	var p pickler
	p.op(0x80, 2, '}', '(')
	for _, t := range tensors {
		st := byKey[t.storage]
		p.str(t.name)
		p.global("torch._utils", "_rebuild_tensor_v2")
		p.op('(', '(')
		p.str("storage")
		p.global("torch", classes[st.dtype])
		if legacy && st.viewOf != "" {
			root := byKey[st.viewOf]
			p.str(root.key)
			p.str("cpu")
			p.int(len(root.data) / root.dtype.Size())
			p.op('(')
			p.str(st.key)
			p.int(st.viewOffset)
			p.int(len(st.data) / st.dtype.Size())
			p.op('t')
		} else {
			p.str(st.key)
			p.str("cpu")
			p.int(len(st.data) / st.dtype.Size())
			if legacy {
				p.op('N')
			}
		}
		p.op('t', 'Q')
		p.int(t.offset)
		p.ints(t.shape)
		p.ints(t.stride)
		p.op(0x89) // requires_grad False
		p.global("collections", "OrderedDict")
		p.op(')', 'R', 't', 'R')
	}
	p.op('u', '.')
	return p.Bytes()
}

// writeZip writes a torch zip checkpoint with archive name arch.
func writeZip(t testing.TB, w io.Writer, arch string, pkl []byte, storages []wStorage) {
	t.Helper()
	zw := zip.NewWriter(w)
	put := func(name string, b []byte, method uint16) {
		f, err := zw.CreateHeader(&zip.FileHeader{Name: arch + "/" + name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	put("data.pkl", pkl, zip.Store)
	put("byteorder", []byte("little"), zip.Store)
	sorted := append([]wStorage(nil), storages...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].key < sorted[j].key })
	for _, s := range sorted {
		if s.omit {
			continue
		}
		m := zip.Store
		if s.compress {
			m = zip.Deflate
		}
		put("data/"+s.key, s.data, m)
	}
	put("version", []byte("3\n"), zip.Store)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeZipFile writes a zip checkpoint of tensors to path.
func writeZipFile(t testing.TB, path string, tensors []wTensor, storages []wStorage) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	writeZip(t, f, "archive", stateDictPickle(tensors, storages, false), storages)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeLegacyFile writes a pre-1.6 checkpoint of tensors to path; view
// storages (viewOf set) are written as part of their root.
func writeLegacyFile(t testing.TB, path string, tensors []wTensor, storages []wStorage) {
	t.Helper()
	var out bytes.Buffer
	one := func(build func(p *pickler)) {
		var p pickler
		p.op(0x80, 2)
		build(&p)
		p.op('.')
		out.Write(p.Bytes())
	}
	one(func(p *pickler) { p.long(legacyMagic) })
	one(func(p *pickler) { p.int(1001) })
	one(func(p *pickler) {
		p.op('}', '(')
		p.str("protocol_version")
		p.int(1001)
		p.str("little_endian")
		p.op(0x88)
		p.str("type_sizes")
		p.op('}', '(')
		for _, kv := range []struct {
			k string
			v int
		}{{"short", 2}, {"int", 4}, {"long", 4}} {
			p.str(kv.k)
			p.int(kv.v)
		}
		p.op('u', 'u')
	})
	out.Write(stateDictPickle(tensors, storages, true))
	var roots []wStorage
	for _, s := range storages {
		if s.viewOf == "" {
			roots = append(roots, s)
		}
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].key < roots[j].key })
	one(func(p *pickler) {
		p.op(']', '(')
		for _, s := range roots {
			p.str(s.key)
		}
		p.op('e')
	})
	for _, s := range roots {
		binary.Write(&out, binary.LittleEndian, int64(len(s.data)/s.dtype.Size()))
		out.Write(s.data)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
