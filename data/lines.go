package data

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// lineReader reads a file line by line, dropping "\n" and "\r\n" line ends.
type lineReader struct {
	br   *bufio.Reader
	line int    // number of the line last returned, from 1
	long []byte // holds lines longer than the buffer
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 1<<20)}
}

// next returns the next line without its line end; the slice is valid until
// the following call. At the end of the input it returns io.EOF.
func (l *lineReader) next() ([]byte, error) {
	b, err := l.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		l.long = append(l.long[:0], b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			b, err = l.br.ReadSlice('\n')
			l.long = append(l.long, b...)
		}
		b = l.long
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(b) == 0 && errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	l.line++
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b, nil
}

// openInput opens one of the dataset's files, naming it in the error.
func openInput(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("data: dataset file %s is missing: %w", path, err)
		}
		return nil, fmt.Errorf("data: open %s: %w", path, err)
	}
	return f, nil
}

// latin1 decodes ISO-8859-1 bytes to a UTF-8 string.
func latin1(b []byte) string {
	ascii := true
	for _, c := range b {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return string(b)
	}
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// splitSep splits b at every sep into at most len(dst) fields, returning the
// number of fields found (which may exceed len(dst)).
func splitSep(b []byte, sep []byte, dst [][]byte) int {
	n := 0
	for {
		i := bytes.Index(b, sep)
		if i < 0 {
			if n < len(dst) {
				dst[n] = b
			}
			return n + 1
		}
		if n < len(dst) {
			dst[n] = b[:i]
		}
		n++
		b = b[i+len(sep):]
	}
}
