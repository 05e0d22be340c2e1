package torchbin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"

	"github.com/rella-project/rella/safetensors"
)

// storageClasses maps torch's storage class names (the `torch.HalfStorage`
// globals a state_dict pickle names) to the element type they hold.
var storageClasses = map[string]safetensors.DType{
	"HalfStorage":     safetensors.DTypeF16,
	"BFloat16Storage": safetensors.DTypeBF16,
	"FloatStorage":    safetensors.DTypeF32,
	"DoubleStorage":   safetensors.DTypeF64,
	"LongStorage":     safetensors.DTypeI64,
	"IntStorage":      safetensors.DTypeI32,
	"ByteStorage":     safetensors.DTypeU8,
}

// storageClass is the value a `torch.<X>Storage` global unpickles to: a
// marker naming the dtype, never anything callable.
type storageClass struct {
	name  string
	dtype safetensors.DType
}

// storageRef is what a persistent id unpickles to: one storage of the
// checkpoint, not yet located in the file.
type storageRef struct {
	key   string // zip: data/<key>; legacy: the root key
	dtype safetensors.DType
	numel int64 // elements the pickle declares
	// legacy view storages: the elements [viewOffset, viewOffset+numel) of root key.
	viewOf     string
	viewOffset int64
}

// tensorRef is what _rebuild_tensor_v2 and friends unpickle to.
type tensorRef struct {
	storage *storageRef
	offset  int64 // in elements
	shape   []int
	stride  []int
}

// rebuildFunc is one of torch._utils' tensor rebuilders, implemented here
// by building a tensorRef from its arguments and nothing else.
type rebuildFunc struct{ name string }

func (f rebuildFunc) Call(args ...any) (any, error) {
	switch f.name {
	case "_rebuild_tensor_v2", "_rebuild_tensor":
		// (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
		n := len(args)
		if (f.name == "_rebuild_tensor" && n != 4) || (f.name == "_rebuild_tensor_v2" && n != 6 && n != 7) {
			return nil, fmt.Errorf("torch._utils.%s called with %d arguments", f.name, n)
		}
		st, ok := args[0].(*storageRef)
		if !ok {
			return nil, fmt.Errorf("torch._utils.%s: first argument is %T, want a storage", f.name, args[0])
		}
		off, err := toInt(args[1])
		if err != nil {
			return nil, fmt.Errorf("torch._utils.%s: storage offset: %w", f.name, err)
		}
		shape, err := toInts(args[2])
		if err != nil {
			return nil, fmt.Errorf("torch._utils.%s: size: %w", f.name, err)
		}
		stride, err := toInts(args[3])
		if err != nil {
			return nil, fmt.Errorf("torch._utils.%s: stride: %w", f.name, err)
		}
		if len(stride) != len(shape) {
			return nil, fmt.Errorf("torch._utils.%s: size %v and stride %v differ in rank", f.name, shape, stride)
		}
		if off < 0 {
			return nil, fmt.Errorf("torch._utils.%s: negative storage offset %d", f.name, off)
		}
		for i := range shape {
			if shape[i] < 0 || stride[i] < 0 {
				return nil, fmt.Errorf("torch._utils.%s: negative size %v or stride %v", f.name, shape, stride)
			}
		}
		return &tensorRef{storage: st, offset: int64(off), shape: shape, stride: stride}, nil
	case "_rebuild_parameter", "_rebuild_parameter_with_state":
		// (data, requires_grad, backward_hooks[, state]): a Parameter is its data.
		if len(args) < 3 {
			return nil, fmt.Errorf("torch._utils.%s called with %d arguments", f.name, len(args))
		}
		t, ok := args[0].(*tensorRef)
		if !ok {
			return nil, fmt.Errorf("torch._utils.%s: first argument is %T, want a tensor", f.name, args[0])
		}
		return t, nil
	}
	return nil, fmt.Errorf("torch._utils.%s is not supported", f.name)
}

// codecsEncode is `_codecs.encode`, which protocol-2 pickles use to spell
// a bytes object: encode(str, "latin1") returns the string's code points as bytes.
type codecsEncode struct{}

func (codecsEncode) Call(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("_codecs.encode called with %d arguments", len(args))
	}
	s, ok1 := args[0].(string)
	enc, ok2 := args[1].(string)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("_codecs.encode wants (str, str), got (%T, %T)", args[0], args[1])
	}
	switch enc {
	case "latin1", "latin-1", "iso-8859-1":
		b := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 0xff {
				return nil, fmt.Errorf("_codecs.encode: %q is not latin1", r)
			}
			b = append(b, byte(r))
		}
		return b, nil
	case "utf-8", "utf8":
		return []byte(s), nil
	}
	return nil, fmt.Errorf("_codecs.encode: encoding %q is not supported", enc)
}

// findClass is the unpickler's only way to name a Python global. It
// returns inert Go values for the few globals a state_dict needs and
// refuses everything else by name: nothing from the file is ever run.
// (gopickle itself resolves collections.OrderedDict, builtins.list/dict and
// a few copy_reg helpers to its own inert types before asking.)
func findClass(module, name string) (any, error) {
	switch module {
	case "torch._utils":
		switch name {
		case "_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_parameter", "_rebuild_parameter_with_state":
			return rebuildFunc{name}, nil
		}
	case "torch":
		if dt, ok := storageClasses[name]; ok {
			return storageClass{name: name, dtype: dt}, nil
		}
		if strings.HasSuffix(name, "Storage") {
			return nil, fmt.Errorf("storage type torch.%s is not supported (rella reads Half, BFloat16, Float, Double, Long, Int and Byte storages)", name)
		}
	case "_codecs":
		if name == "encode" {
			return codecsEncode{}, nil
		}
	}
	return nil, &RefusedGlobalError{Module: module, Name: name}
}

// RefusedGlobalError is returned when a pickle names a global outside the
// short list a state_dict needs (for example posix.system).
type RefusedGlobalError struct{ Module, Name string }

func (e *RefusedGlobalError) Error() string {
	return fmt.Sprintf("refused global %s.%s: a checkpoint's pickle may name only torch tensor rebuilders, storage classes and collections.OrderedDict, and rella never runs code from a file", e.Module, e.Name)
}

// unpickle runs data (one pickle) in gopickle's VM with rella's hooks.
// persistent resolves a persistent id tuple. The stream is first checked
// opcode by opcode so that no length in it can ask for more bytes than
// the stream holds, and any panic inside the VM becomes an error.
func unpickle(data []byte, persistent func(pid *types.Tuple) (any, error)) (result any, n int, err error) {
	n, err = scanPickle(data)
	if err != nil {
		return nil, 0, err
	}
	r := bytes.NewReader(data[:n])
	u := pickle.NewUnpickler(r)
	u.FindClass = findClass
	u.PersistentLoad = func(pid any) (any, error) {
		t, ok := pid.(*types.Tuple)
		if !ok {
			return nil, fmt.Errorf("persistent id is %T, want a tuple", pid)
		}
		return persistent(t)
	}
	u.GetExtension = func(code int) (any, error) {
		return nil, fmt.Errorf("pickle extension code %d is not supported", code)
	}
	defer func() {
		if p := recover(); p != nil {
			result, err = nil, fmt.Errorf("malformed pickle: %v", p)
		}
	}()
	result, err = u.Load()
	if err != nil {
		return nil, 0, err
	}
	return result, n, nil
}

// scanPickle walks one pickle's opcodes up to and including STOP and
// returns its length. It refuses unknown opcodes and any length that runs
// past the data, so the VM never allocates more than the stream holds.
func scanPickle(data []byte) (int, error) {
	i := 0
	need := func(k int) error {
		if k < 0 || k > len(data)-i {
			return fmt.Errorf("malformed pickle: opcode at byte %d needs %d bytes, %d remain", i-1, k, len(data)-i)
		}
		return nil
	}
	line := func() error {
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			return fmt.Errorf("malformed pickle: unterminated line argument at byte %d", i)
		}
		i += j + 1
		return nil
	}
	for i < len(data) {
		op := data[i]
		i++
		var err error
		switch op {
		case '.': // STOP
			return i, nil
		case '(', '0', '1', '2', 'N', 'R', 'a', 'b', 'd', '}', 'e', 'l', ']', 'o', 's', 't', ')', 'u', 'Q',
			0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98:
		case 'K', 'h', 'q', 0x80, 0x82:
			err = need(1)
			i++
		case 'M', 0x83:
			err = need(2)
			i += 2
		case 'J', 'j', 'r', 0x84:
			err = need(4)
			i += 4
		case 'G':
			err = need(8)
			i += 8
		case 0x95: // FRAME: an 8-byte length, then more opcodes
			err = need(8)
			i += 8
		case 'U', 'C', 0x8c, 0x8a: // 1-byte length + data
			if err = need(1); err == nil {
				k := int(data[i])
				i++
				if err = need(k); err == nil {
					i += k
				}
			}
		case 'T', 'X', 'B', 0x8b: // 4-byte length + data
			if err = need(4); err == nil {
				k := int64(int32(binary.LittleEndian.Uint32(data[i:])))
				if op == 'X' || op == 'B' {
					k = int64(binary.LittleEndian.Uint32(data[i:]))
				}
				i += 4
				if k > int64(len(data)-i) || k < 0 {
					err = fmt.Errorf("malformed pickle: opcode at byte %d declares %d bytes, %d remain", i-5, k, len(data)-i)
				} else {
					i += int(k)
				}
			}
		case 0x8d, 0x8e, 0x96: // 8-byte length + data
			if err = need(8); err == nil {
				k := binary.LittleEndian.Uint64(data[i:])
				i += 8
				if k > uint64(len(data)-i) {
					err = fmt.Errorf("malformed pickle: opcode at byte %d declares %d bytes, %d remain", i-9, k, len(data)-i)
				} else {
					i += int(k)
				}
			}
		case 'F', 'I', 'L', 'S', 'V', 'P', 'g', 'p':
			err = line()
		case 'c', 'i':
			if err = line(); err == nil {
				err = line()
			}
		default:
			return 0, fmt.Errorf("malformed pickle: unknown opcode 0x%02x at byte %d", op, i-1)
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, errors.New("malformed pickle: no STOP opcode (truncated?)")
}

// toInt converts a pickled integer to int.
func toInt(v any) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case *big.Int:
		if x.IsInt64() {
			return int(x.Int64()), nil
		}
		return 0, fmt.Errorf("integer %s is out of range", x)
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("got %T, want an integer", v)
}

// toInts converts a pickled tuple (or list) of integers.
func toInts(v any) ([]int, error) {
	var items []any
	switch x := v.(type) {
	case *types.Tuple:
		items = *x
	case *types.List:
		items = *x
	default:
		return nil, fmt.Errorf("got %T, want a tuple of integers", v)
	}
	out := make([]int, len(items))
	for i, it := range items {
		n, err := toInt(it)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}
