package tokenizer

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// spmProto is the part of SentencePiece's ModelProto the tokenizer needs.
type spmProto struct {
	pieces []spmPiece

	// TrainerSpec
	modelType        int // 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
	byteFallback     bool
	treatWSAsSuffix  bool
	unkID, bosID     int
	eosID, padID     int
	hasTrainerSpec   bool
	hasNormalizerSpc bool

	// NormalizerSpec
	normName         string
	charsmap         []byte
	addDummyPrefix   bool
	removeExtraSpace bool
	escapeSpaces     bool
}

type spmPiece struct {
	piece string
	score float32
	kind  pieceKind
}

// Field numbers of sentencepiece_model.proto.
const (
	fModelPieces         = 1
	fModelTrainerSpec    = 2
	fModelNormalizerSpec = 3

	fPiecePiece = 1
	fPieceScore = 2
	fPieceType  = 3

	fTrainerModelType       = 3
	fTrainerTreatWSAsSuffix = 24
	fTrainerByteFallback    = 35
	fTrainerUnkID           = 40
	fTrainerBosID           = 41
	fTrainerEosID           = 42
	fTrainerPadID           = 43

	fNormName           = 1
	fNormCharsmap       = 2
	fNormAddDummyPrefix = 3
	fNormRemoveExtraWS  = 4
	fNormEscapeWS       = 5
)

// parseSPM decodes a serialized ModelProto.
func parseSPM(data []byte) (*spmProto, error) {
	p := &spmProto{
		// proto2 defaults
		modelType: 1, unkID: 0, bosID: 1, eosID: 2, padID: -1,
		addDummyPrefix: true, removeExtraSpace: true, escapeSpaces: true,
	}
	err := walk(data, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch {
		case num == fModelPieces && typ == protowire.BytesType:
			piece, err := parsePiece(b)
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(p.pieces), err)
			}
			p.pieces = append(p.pieces, piece)
		case num == fModelTrainerSpec && typ == protowire.BytesType:
			p.hasTrainerSpec = true
			if err := p.parseTrainer(b); err != nil {
				return fmt.Errorf("trainer_spec: %w", err)
			}
		case num == fModelNormalizerSpec && typ == protowire.BytesType:
			p.hasNormalizerSpc = true
			if err := p.parseNormalizer(b); err != nil {
				return fmt.Errorf("normalizer_spec: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(p.pieces) == 0 {
		return nil, errors.New("no pieces (not a SentencePiece model?)")
	}
	return p, nil
}

func parsePiece(b []byte) (spmPiece, error) {
	sp := spmPiece{kind: kindNormal}
	seen := false
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, raw []byte) error {
		switch {
		case num == fPiecePiece && typ == protowire.BytesType:
			sp.piece = string(raw)
			seen = true
		case num == fPieceScore && typ == protowire.Fixed32Type:
			sp.score = math.Float32frombits(uint32(v))
		case num == fPieceType && typ == protowire.VarintType:
			if v < 1 || v > 6 {
				return fmt.Errorf("unknown piece type %d", v)
			}
			sp.kind = pieceKind(v)
		}
		return nil
	})
	if err == nil && !seen {
		err = errors.New("piece without text")
	}
	return sp, err
}

func (p *spmProto) parseTrainer(b []byte) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v uint64, _ []byte) error {
		if typ != protowire.VarintType {
			return nil
		}
		switch num {
		case fTrainerModelType:
			p.modelType = int(v)
		case fTrainerTreatWSAsSuffix:
			p.treatWSAsSuffix = v != 0
		case fTrainerByteFallback:
			p.byteFallback = v != 0
		case fTrainerUnkID:
			p.unkID = int(int32(v))
		case fTrainerBosID:
			p.bosID = int(int32(v))
		case fTrainerEosID:
			p.eosID = int(int32(v))
		case fTrainerPadID:
			p.padID = int(int32(v))
		}
		return nil
	})
}

func (p *spmProto) parseNormalizer(b []byte) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v uint64, raw []byte) error {
		switch {
		case num == fNormName && typ == protowire.BytesType:
			p.normName = string(raw)
		case num == fNormCharsmap && typ == protowire.BytesType:
			p.charsmap = append([]byte(nil), raw...)
		case num == fNormAddDummyPrefix && typ == protowire.VarintType:
			p.addDummyPrefix = v != 0
		case num == fNormRemoveExtraWS && typ == protowire.VarintType:
			p.removeExtraSpace = v != 0
		case num == fNormEscapeWS && typ == protowire.VarintType:
			p.escapeSpaces = v != 0
		}
		return nil
	})
}

// walk calls fn for every field of a protobuf message: v holds varint and
// fixed values, b the bytes of length-delimited fields.
func walk(data []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error) error {
	for off := 0; len(data) > 0; {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return fmt.Errorf("byte %d: bad field tag: %w", off, protowire.ParseError(n))
		}
		data, off = data[n:], off+n
		var (
			v uint64
			b []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(data)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(data)
			v = uint64(u)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(data)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(data)
		default:
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return fmt.Errorf("byte %d: field %d: %w", off, num, protowire.ParseError(n))
		}
		if err := fn(num, typ, v, b); err != nil {
			return err
		}
		data, off = data[n:], off+n
	}
	return nil
}

// fromSPM builds a Tokenizer from a parsed SentencePiece model.
func fromSPM(p *spmProto) (*Tokenizer, error) {
	if p.modelType != 2 {
		names := map[int]string{1: "UNIGRAM", 3: "WORD", 4: "CHAR"}
		return nil, fmt.Errorf("model type %s (%d) is not supported: only BPE", names[p.modelType], p.modelType)
	}
	if len(p.charsmap) > 0 {
		return nil, fmt.Errorf("normalization rule %q (a precompiled character map) is not supported: only identity", p.normName)
	}
	if p.treatWSAsSuffix {
		return nil, errors.New("treat_whitespace_as_suffix is not supported")
	}
	n := len(p.pieces)
	pieces := make([]string, n)
	kinds := make([]pieceKind, n)
	scores := make([]float32, n)
	seen := make(map[string]int, n)
	for i, sp := range p.pieces {
		if j, dup := seen[sp.piece]; dup {
			return nil, fmt.Errorf("piece %d %q: already defined as piece %d", i, sp.piece, j)
		}
		seen[sp.piece] = i
		switch sp.kind {
		case kindUserDefined:
			return nil, fmt.Errorf("piece %d %q: USER_DEFINED pieces are not supported", i, sp.piece)
		case kindUnused:
			return nil, fmt.Errorf("piece %d %q: UNUSED pieces are not supported", i, sp.piece)
		case kindByte:
			if _, ok := parseBytePiece(sp.piece); !ok {
				return nil, fmt.Errorf("piece %d %q: BYTE piece is not <0xXX>", i, sp.piece)
			}
		}
		pieces[i], kinds[i], scores[i] = sp.piece, sp.kind, sp.score
	}
	unk := -1
	for i, k := range kinds {
		if k == kindUnknown {
			unk = i
			break
		}
	}
	if unk < 0 {
		return nil, errors.New("no UNKNOWN piece")
	}
	m, err := newModel(pieces, kinds, scores, nil, p.byteFallback, false, p.escapeSpaces, unk)
	if err != nil {
		return nil, err
	}
	idOr := func(id int, want pieceKind) int {
		if id >= 0 && id < n && kinds[id] == want {
			return id
		}
		return -1
	}
	t := &Tokenizer{
		m:              m,
		bos:            idOr(p.bosID, kindControl),
		eos:            idOr(p.eosID, kindControl),
		unk:            unk,
		addDummyPrefix: p.addDummyPrefix,
		removeExtraWS:  p.removeExtraSpace,
	}
	// HF's LlamaTokenizer treats <unk>, <s>, </s> (the UNKNOWN and CONTROL
	// pieces) as special tokens and cuts them out of the text.
	for i, k := range kinds {
		if k == kindControl || k == kindUnknown {
			t.specials = append(t.specials, special{text: pieces[i], id: i})
		}
	}
	return t, nil
}
