// Package torchbin reads PyTorch `.bin` checkpoints (what torch.save writes
// for a state_dict, as HF's pytorch_model*.bin files hold) without PyTorch
// and without running anything from the file.
//
// Two layouts are read: torch's zip format (torch >= 1.6: `<archive>/data.pkl`
// plus one raw storage per `<archive>/data/<key>` entry, stored uncompressed)
// and the legacy format (a sequence of pickles followed by the storages'
// bytes). The file is memory-mapped and each tensor's bytes are read in
// place from its storage, like the safetensors path: nothing is decoded up
// front. The pickle runs in gopickle's VM with hooks that only build inert
// descriptions of tensors and storages; any other global is refused by name.
package torchbin

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/nlpodyssey/gopickle/types"

	"github.com/rella-project/rella/safetensors"
)

// Info describes one tensor of the checkpoint.
type Info struct {
	Name    string
	DType   safetensors.DType
	Shape   []int
	Strides []int  // in elements, as torch stores them
	Storage string // the storage key the tensor views
	// Offset is the byte offset of the tensor's first element in the file.
	Offset int64
}

// Elems returns the number of elements the shape holds.
func (i Info) Elems() int {
	n := 1
	for _, d := range i.Shape {
		n *= d
	}
	return n
}

// Contiguous reports whether the tensor's elements lie packed in row-major
// order (the layout safetensors and the engines use).
func (i Info) Contiguous() bool {
	want := 1
	for k := len(i.Shape) - 1; k >= 0; k-- {
		if i.Shape[k] != 1 && i.Strides[k] != want {
			return false
		}
		want *= i.Shape[k]
	}
	return true
}

// File is an open, memory-mapped `.bin` checkpoint.
type File struct {
	path    string
	format  string // "zip" or "legacy"
	mapped  []byte
	tensors map[string]Info

	bareTensor bool
}

// Open memory-maps path and reads its pickle: every tensor's storage is
// located in the file and checked to hold the tensor's shape and strides.
func Open(path string) (*File, error) {
	return open(path, false)
}

// open is Open; bareTensor also accepts a file holding one tensor rather
// than a state_dict (tests read torch's own single-tensor files), named "".
func open(path string, bareTensor bool) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("torchbin: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("torchbin: %s: %w", path, err)
	}
	if st.Size() < 4 {
		return nil, fmt.Errorf("torchbin: %s: file is %d bytes, too short for a checkpoint (truncated?)", path, st.Size())
	}
	if st.Size() > math.MaxInt {
		return nil, fmt.Errorf("torchbin: %s: file is too large to map", path)
	}
	mapped, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("torchbin: %s: mmap: %w", path, err)
	}
	tf := &File{path: path, mapped: mapped, bareTensor: bareTensor}
	if bytes.HasPrefix(mapped, []byte("PK\x03\x04")) {
		tf.format = "zip"
		err = tf.parseZip()
	} else {
		// The legacy format starts with a pickle of torch's magic number;
		// parseLegacy says so when the file is anything else.
		tf.format = "legacy"
		err = tf.parseLegacy()
	}
	if err != nil {
		syscall.Munmap(mapped)
		return nil, err
	}
	return tf, nil
}

// Close unmaps the file. Slices returned by Bytes become invalid.
func (f *File) Close() error {
	if f.mapped == nil {
		return nil
	}
	err := syscall.Munmap(f.mapped)
	f.mapped = nil
	if err != nil {
		return fmt.Errorf("torchbin: %s: munmap: %w", f.path, err)
	}
	return nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Format returns "zip" (torch >= 1.6) or "legacy".
func (f *File) Format() string { return f.format }

// Names returns the tensor names, sorted.
func (f *File) Names() []string { return slices.Sorted(maps.Keys(f.tensors)) }

// Info returns the description of the named tensor.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.tensors[name]
	return i, ok
}

// Bytes returns the named tensor's little-endian bytes in row-major order.
// For a contiguous tensor they alias the read-only mapping (do not write to
// them, and do not use them after Close); a strided view is gathered into a
// new slice.
func (f *File) Bytes(name string) ([]byte, error) {
	i, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("torchbin: %s: no tensor %q", f.path, name)
	}
	es := int64(i.DType.Size())
	n := int64(i.Elems())
	if i.Contiguous() {
		return f.mapped[i.Offset : i.Offset+n*es], nil
	}
	out := make([]byte, 0, n*es)
	idx := make([]int, len(i.Shape))
	for k := int64(0); k < n; k++ {
		var at int64
		for d, x := range idx {
			at += int64(x) * int64(i.Strides[d])
		}
		p := i.Offset + at*es
		out = append(out, f.mapped[p:p+es]...)
		for d := len(idx) - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < i.Shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, nil
}

// Float32s returns the named tensor converted to float32 (F32, F16, BF16 or F64).
func (f *File) Float32s(name string) ([]float32, error) {
	b, err := f.Bytes(name)
	if err != nil {
		return nil, err
	}
	i := f.tensors[name]
	out := make([]float32, i.Elems())
	switch i.DType {
	case safetensors.DTypeF32:
		for k := range out {
			out[k] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*k:]))
		}
	case safetensors.DTypeBF16:
		for k := range out {
			out[k] = safetensors.BF16ToF32(binary.LittleEndian.Uint16(b[2*k:]))
		}
	case safetensors.DTypeF16:
		for k := range out {
			out[k] = safetensors.F16ToF32(binary.LittleEndian.Uint16(b[2*k:]))
		}
	case safetensors.DTypeF64:
		for k := range out {
			out[k] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*k:])))
		}
	default:
		return nil, fmt.Errorf("torchbin: %s: tensor %q is %s, want a float type", f.path, name, i.DType)
	}
	return out, nil
}

// located is a storage found in the file: its bytes lie at [begin, begin+size).
type located struct {
	begin, size int64
}

// parseZip reads torch's zip format.
func (f *File) parseZip() error {
	zr, err := zip.NewReader(bytes.NewReader(f.mapped), int64(len(f.mapped)))
	if err != nil {
		return fmt.Errorf("torchbin: %s: not a readable zip archive, the file is truncated or damaged (torch.save's zip ends in a directory of its entries): %w", f.path, err)
	}
	var pkl *zip.File
	entries := map[string]*zip.File{}
	for _, e := range zr.File {
		entries[e.Name] = e
		if strings.HasSuffix(e.Name, "/data.pkl") && strings.Count(e.Name, "/") == 1 {
			if pkl != nil {
				return fmt.Errorf("torchbin: %s: two data.pkl records (%s and %s)", f.path, pkl.Name, e.Name)
			}
			pkl = e
		}
	}
	if pkl == nil {
		return fmt.Errorf("torchbin: %s: the zip holds no <archive>/data.pkl record, so it is not a torch.save checkpoint", f.path)
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	if bo, ok := entries[prefix+"byteorder"]; ok {
		b, err := readEntry(bo, 16)
		if err != nil {
			return fmt.Errorf("torchbin: %s: %s: %w", f.path, bo.Name, err)
		}
		if string(b) != "little" {
			return fmt.Errorf("torchbin: %s: storages are %q-endian, rella reads little-endian only", f.path, b)
		}
	}
	data, err := readEntry(pkl, 1<<30)
	if err != nil {
		return fmt.Errorf("torchbin: %s: %s: %w", f.path, pkl.Name, err)
	}
	storages := map[string]*storageRef{}
	persistent := func(pid *types.Tuple) (any, error) {
		if pid.Len() != 5 {
			return nil, fmt.Errorf("persistent id %v has %d fields, want 5 ('storage', class, key, location, numel)", pid, pid.Len())
		}
		return storageFromPID(storages, *pid)
	}
	obj, _, err := unpickle(data, persistent)
	if err != nil {
		return fmt.Errorf("torchbin: %s: %s: %w", f.path, pkl.Name, err)
	}
	refs, err := f.stateDict(obj)
	if err != nil {
		return fmt.Errorf("torchbin: %s: %s: %w", f.path, pkl.Name, err)
	}
	locate := func(st *storageRef) (located, error) {
		name := prefix + "data/" + st.key
		e, ok := entries[name]
		if !ok {
			return located{}, fmt.Errorf("storage %q is missing: the zip has no %s record", st.key, name)
		}
		if e.Method != zip.Store {
			return located{}, fmt.Errorf("storage %q (%s) is compressed (zip method %d); rella reads storages in place and needs them stored as torch.save writes them (re-save with torch.save, or convert elsewhere)", st.key, name, e.Method)
		}
		off, err := e.DataOffset()
		if err != nil {
			return located{}, fmt.Errorf("storage %q (%s): %w", st.key, name, err)
		}
		size := int64(e.UncompressedSize64)
		if e.CompressedSize64 != e.UncompressedSize64 {
			return located{}, fmt.Errorf("storage %q (%s): stored entry with %d compressed and %d uncompressed bytes", st.key, name, e.CompressedSize64, e.UncompressedSize64)
		}
		if e.UncompressedSize64 > math.MaxInt64/2 || off < 0 || off+size > int64(len(f.mapped)) {
			return located{}, fmt.Errorf("storage %q (%s) runs to byte %d past the end of the %d-byte file (truncated?)", st.key, name, off+size, len(f.mapped))
		}
		return located{begin: off, size: size}, nil
	}
	return f.resolve(refs, locate)
}

// readEntry reads a small zip record whole.
func readEntry(e *zip.File, limit int64) ([]byte, error) {
	if e.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("record is %d bytes, more than the %d expected", e.UncompressedSize64, limit)
	}
	rc, err := e.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}

// storageFromPID turns a persistent id ('storage', class, key, location,
// numel[, view_metadata]) into a storageRef, one per key.
func storageFromPID(storages map[string]*storageRef, pid []any) (*storageRef, error) {
	if s, _ := pid[0].(string); s != "storage" {
		return nil, fmt.Errorf("persistent id of kind %v; only storages are supported", pid[0])
	}
	cls, ok := pid[1].(storageClass)
	if !ok {
		return nil, fmt.Errorf("persistent id names storage class %v (%T), want a torch.<Type>Storage", pid[1], pid[1])
	}
	key, ok := pid[2].(string)
	if !ok {
		return nil, fmt.Errorf("persistent id has storage key %v (%T), want a string", pid[2], pid[2])
	}
	numel, err := toInt(pid[4])
	if err != nil || numel < 0 {
		return nil, fmt.Errorf("storage %q: bad element count %v", key, pid[4])
	}
	root, ok := storages[key]
	if !ok {
		root = &storageRef{key: key, dtype: cls.dtype, numel: int64(numel)}
		storages[key] = root
	} else if root.dtype != cls.dtype {
		return nil, fmt.Errorf("storage %q is named as both %s and %s", key, root.dtype, cls.dtype)
	}
	if len(pid) < 6 || pid[5] == nil {
		return root, nil
	}
	// Legacy view storage: (view_key, offset, view_size), in elements of the root.
	view, ok := pid[5].(*types.Tuple)
	if !ok || view.Len() != 3 {
		return nil, fmt.Errorf("storage %q: view metadata %v, want (key, offset, size)", key, pid[5])
	}
	vkey, ok := view.Get(0).(string)
	voff, err1 := toInt(view.Get(1))
	vsize, err2 := toInt(view.Get(2))
	if !ok || err1 != nil || err2 != nil || voff < 0 || vsize < 0 {
		return nil, fmt.Errorf("storage %q: view metadata %v, want (key, offset, size)", key, view)
	}
	if v, ok := storages[vkey]; ok {
		return v, nil
	}
	v := &storageRef{key: vkey, dtype: cls.dtype, numel: int64(vsize), viewOf: key, viewOffset: int64(voff)}
	storages[vkey] = v
	return v, nil
}

// namedRef is one state_dict entry.
type namedRef struct {
	name string
	t    *tensorRef
}

// stateDict reads the unpickled top-level object: a dict or OrderedDict of
// tensor name -> tensor.
func (f *File) stateDict(obj any) ([]namedRef, error) {
	if t, ok := obj.(*tensorRef); ok && f.bareTensor {
		return []namedRef{{"", t}}, nil
	}
	var out []namedRef
	add := func(k, v any) error {
		name, ok := k.(string)
		if !ok {
			return fmt.Errorf("state_dict key %v is %T, want a string", k, k)
		}
		t, ok := v.(*tensorRef)
		if !ok {
			return fmt.Errorf("state_dict entry %q is %T, want a tensor", name, v)
		}
		out = append(out, namedRef{name, t})
		return nil
	}
	switch d := obj.(type) {
	case *types.Dict:
		for _, e := range *d {
			if err := add(e.Key, e.Value); err != nil {
				return nil, err
			}
		}
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			en := e.Value.(*types.OrderedDictEntry)
			if err := add(en.Key, en.Value); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("the pickle holds a %T, want a state_dict (a dict of tensor name -> tensor)", obj)
	}
	return out, nil
}

// resolve places every tensor in the file through locate and checks that
// its shape and strides fit its storage.
func (f *File) resolve(refs []namedRef, locate func(*storageRef) (located, error)) error {
	f.tensors = make(map[string]Info, len(refs))
	for _, r := range refs {
		if _, dup := f.tensors[r.name]; dup {
			return fmt.Errorf("torchbin: %s: tensor %q appears twice", f.path, r.name)
		}
		st := r.t.storage
		es := int64(st.dtype.Size())
		loc, err := locate(st)
		if err != nil {
			return fmt.Errorf("torchbin: %s: tensor %q: %w", f.path, r.name, err)
		}
		if loc.size%es != 0 {
			return fmt.Errorf("torchbin: %s: tensor %q: storage %q holds %d bytes, not a whole number of %d-byte %s elements", f.path, r.name, st.key, loc.size, es, st.dtype)
		}
		have := loc.size / es
		if have < st.numel {
			return fmt.Errorf("torchbin: %s: tensor %q: storage %q holds %d elements, its header declares %d (truncated?)", f.path, r.name, st.key, have, st.numel)
		}
		// The last element the view touches must lie inside the storage.
		var span int64 = 1
		empty := false
		for k, d := range r.t.shape {
			if d == 0 {
				empty = true
			}
			if d > 0 {
				if int64(d-1) > math.MaxInt64/4/max(int64(r.t.stride[k]), 1) {
					return fmt.Errorf("torchbin: %s: tensor %q: shape %v with strides %v overflows", f.path, r.name, r.t.shape, r.t.stride)
				}
				span += int64(d-1) * int64(r.t.stride[k])
			}
		}
		if empty {
			span = 0
		}
		if r.t.offset+span > st.numel {
			return fmt.Errorf("torchbin: %s: tensor %q: shape %v with strides %v at storage offset %d needs %d elements, storage %q holds %d",
				f.path, r.name, r.t.shape, r.t.stride, r.t.offset, r.t.offset+span, st.key, st.numel)
		}
		// A view with more elements than its storage repeats elements
		// (stride 0, as expand() makes); a state_dict never holds one.
		elems := int64(1)
		for _, d := range r.t.shape {
			if d > 0 && elems > st.numel/int64(d) {
				return fmt.Errorf("torchbin: %s: tensor %q: shape %v holds more elements than storage %q (%d): a repeating view, which rella does not read",
					f.path, r.name, r.t.shape, st.key, st.numel)
			}
			elems *= int64(d)
		}
		f.tensors[r.name] = Info{
			Name: r.name, DType: st.dtype, Shape: r.t.shape, Strides: r.t.stride, Storage: st.key,
			Offset: loc.begin + r.t.offset*es,
		}
	}
	return nil
}

// legacyMagic is the first pickle of a legacy torch.save file.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

// parseLegacy reads the pre-1.6 format: pickles of the magic number, the
// protocol version and sys_info, the state_dict, and the list of storage
// keys; then, per key in that order, an int64 element count and the bytes.
func (f *File) parseLegacy() error {
	pos := 0
	next := func(what string, persistent func(*types.Tuple) (any, error)) (any, error) {
		if persistent == nil {
			persistent = func(pid *types.Tuple) (any, error) {
				return nil, fmt.Errorf("unexpected persistent id %v", pid)
			}
		}
		v, n, err := unpickle(f.mapped[pos:], persistent)
		if err != nil {
			return nil, fmt.Errorf("torchbin: %s: legacy format, %s pickle at byte %d: %w", f.path, what, pos, err)
		}
		pos += n
		return v, nil
	}
	notTorch := fmt.Errorf("torchbin: %s: neither torch's zip format nor its legacy format (first bytes % x): not a torch.save file", f.path, f.mapped[:4])
	magic, err := next("magic number", nil)
	if err != nil {
		return fmt.Errorf("%w; reading it as a legacy file: %w", notTorch, err)
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return notTorch
	}
	if _, err := next("protocol version", nil); err != nil {
		return err
	}
	sysInfo, err := next("sys_info", nil)
	if err != nil {
		return err
	}
	if d, ok := sysInfo.(*types.Dict); ok {
		if le, ok := d.Get("little_endian"); ok && le != true {
			return fmt.Errorf("torchbin: %s: written on a big-endian machine, rella reads little-endian only", f.path)
		}
	}
	storages := map[string]*storageRef{}
	obj, err := next("state_dict", func(pid *types.Tuple) (any, error) {
		if pid.Len() != 6 {
			return nil, fmt.Errorf("persistent id %v has %d fields, want 6 ('storage', class, key, location, numel, view)", pid, pid.Len())
		}
		return storageFromPID(storages, *pid)
	})
	if err != nil {
		return err
	}
	refs, err := f.stateDict(obj)
	if err != nil {
		return fmt.Errorf("torchbin: %s: %w", f.path, err)
	}
	keysObj, err := next("storage keys", nil)
	if err != nil {
		return err
	}
	keyList, ok := keysObj.(*types.List)
	if !ok {
		return fmt.Errorf("torchbin: %s: legacy storage key list is %T, want a list", f.path, keysObj)
	}
	// Walk the storages' records without reading their data.
	roots := map[string]located{}
	for _, k := range *keyList {
		key, ok := k.(string)
		if !ok {
			return fmt.Errorf("torchbin: %s: legacy storage key %v is %T, want a string", f.path, k, k)
		}
		st, ok := storages[key]
		if !ok {
			return fmt.Errorf("torchbin: %s: legacy storage %q is listed but no tensor uses it", f.path, key)
		}
		if pos+8 > len(f.mapped) {
			return fmt.Errorf("torchbin: %s: storage %q: its record at byte %d runs past the end of the %d-byte file (truncated?)", f.path, key, pos, len(f.mapped))
		}
		numel := int64(binary.LittleEndian.Uint64(f.mapped[pos:]))
		size := numel * int64(st.dtype.Size())
		if numel < 0 || numel > int64(len(f.mapped)) || int64(pos+8)+size > int64(len(f.mapped)) {
			es := int64(st.dtype.Size())
			roots[key] = located{begin: int64(pos + 8), size: (int64(len(f.mapped)) - int64(pos+8)) / es * es}
			pos = len(f.mapped)
			continue // the tensors on it report the shortfall
		}
		roots[key] = located{begin: int64(pos + 8), size: size}
		pos += 8 + int(size)
	}
	locate := func(st *storageRef) (located, error) {
		root, sub := st.key, int64(0)
		if st.viewOf != "" {
			root, sub = st.viewOf, st.viewOffset*int64(st.dtype.Size())
		}
		loc, ok := roots[root]
		if !ok {
			return located{}, fmt.Errorf("storage %q is missing: the file's storage key list does not name it", root)
		}
		if st.viewOf == "" {
			return loc, nil
		}
		size := st.numel * int64(st.dtype.Size())
		if sub+size > loc.size {
			return located{}, fmt.Errorf("view storage %q covers bytes [%d, %d) of storage %q, which holds %d (truncated?)", st.key, sub, sub+size, root, loc.size)
		}
		return located{begin: loc.begin + sub, size: size}, nil
	}
	if err := f.resolve(refs, locate); err != nil {
		return err
	}
	return nil
}
