package prompt

import (
	"bytes"
	"unicode"
	"unicode/utf8"
)

// PyRepr returns Python 3's repr() of a list of str: "['a', \"b's\"]".
//
// Each string is quoted as Python quotes it: single quotes unless it holds
// a ' and no ", then double quotes; backslashes and the chosen quote are
// escaped; \t, \n and \r are written as such; other characters that
// Python's str.isprintable rejects (Unicode categories C* and Z* except the
// ASCII space) are escaped as \xNN, \uNNNN or \UNNNNNNNN, and printable
// non-ASCII characters are kept. Go's unicode.IsPrint draws the same line
// over Go's Unicode tables (15.0 in Go 1.26): compared over every code
// point with Python 3.11 (Unicode 14.0), the two differ only on the 4,482
// characters new in Unicode 15.0, which Python 3.11 escapes and PyRepr
// keeps. Invalid UTF-8 (which no Python str holds) is written as U+FFFD.
func PyRepr(items []string) string {
	n := 2
	for _, s := range items {
		n += len(s) + 4
	}
	dst := make([]byte, 0, n)
	dst = append(dst, '[')
	for i, s := range items {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendPyStr(dst, []byte(s))
	}
	return string(append(dst, ']'))
}

// appendPyStr appends Python's repr() of s (UTF-8). s must not overlap
// dst[len(dst):cap(dst)].
func appendPyStr(dst []byte, s []byte) []byte {
	quote := byte('\'')
	if bytes.IndexByte(s, '\'') >= 0 && bytes.IndexByte(s, '"') < 0 {
		quote = '"'
	}
	dst = append(dst, quote)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == quote || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\t':
				dst = append(dst, `\t`...)
			case c == '\n':
				dst = append(dst, `\n`...)
			case c == '\r':
				dst = append(dst, `\r`...)
			case c < 0x20 || c == 0x7f:
				dst = appendHexEscape(dst, rune(c))
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, w := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && w == 1:
			dst = utf8.AppendRune(dst, utf8.RuneError)
		case unicode.IsPrint(r):
			dst = append(dst, s[i:i+w]...)
		default:
			dst = appendHexEscape(dst, r)
		}
		i += w
	}
	return append(dst, quote)
}

// appendHexEscape appends Python's escape of a non-printable code point.
func appendHexEscape(dst []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	var n int
	switch {
	case r < 0x100:
		dst, n = append(dst, `\x`...), 2
	case r < 0x10000:
		dst, n = append(dst, `\u`...), 4
	default:
		dst, n = append(dst, `\U`...), 8
	}
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, hex[(r>>(4*uint(i)))&0xf])
	}
	return dst
}

// plainPyStr reports whether Python's repr() of s is s in single quotes:
// no ', no backslash and only printable characters.
func plainPyStr(s []byte) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || c == '\'' || c == '\\' {
				return false
			}
			i++
			continue
		}
		r, w := utf8.DecodeRune(s[i:])
		if (r == utf8.RuneError && w == 1) || !unicode.IsPrint(r) {
			return false
		}
		i += w
	}
	return true
}

// reprInPlace replaces dst[start:] by its Python repr(), reusing dst's
// spare capacity as scratch space.
func reprInPlace(dst []byte, start int) []byte {
	raw := dst[start:]
	if plainPyStr(raw) {
		dst = append(dst, 0)
		copy(dst[start+1:], dst[start:len(dst)-1])
		dst[start] = '\''
		return append(dst, '\'')
	}
	end := len(dst)
	// raw stays valid if append moves dst: the old array is left untouched.
	dst = appendPyStr(dst, raw)
	n := copy(dst[start:], dst[end:])
	return dst[:start+n]
}
