package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/rella-project/rella/tokenizer"
)

// tokenizeCommand encodes lines of JSON strings into JSON arrays of ids.
func tokenizeCommand() command {
	return command{
		name:    "tokenize",
		summary: "encode JSON-string lines from stdin into token-id arrays",
		usage:   "rella tokenize --tokenizer PATH [--bos] < lines.jsonl",
		examples: []string{
			`echo '"Hello world"' | rella tokenize --tokenizer ../shared/fixtures/tokenizer/llama --bos`,
		},
		run: runTokenize,
	}
}

// maxTokenizeLine is the longest input line accepted (bytes).
const maxTokenizeLine = 64 << 20

func runTokenize(ctx context.Context, e *env, args []string) error {
	fs := newFlags("tokenize")
	path := fs.String("tokenizer", "", "tokenizer.model, tokenizer.json, or a folder holding one")
	bos := fs.Bool("bos", false, "prepend the BOS id")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("unexpected argument %q", rest[0])
	}
	if *path == "" {
		return usageErrorf("--tokenizer is required")
	}
	tk, err := tokenizer.Load(*path)
	if err != nil {
		return err
	}
	e.log.Debug("tokenizer loaded", "path", tk.Path(), "vocab", tk.VocabSize())
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 0, 64<<10), maxTokenizeLine)
	w := bufio.NewWriter(e.stdout)
	if err := encodeLines(ctx, sc, w, func(out []int, text string) []int { return tk.AppendEncode(out, text, *bos) }); err != nil {
		w.Flush() // keep the lines done before the error
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
}

// encodeLines reads one JSON string per line from sc and writes the JSON
// array of its ids (from enc) per line to w.
func encodeLines(ctx context.Context, sc *bufio.Scanner, w *bufio.Writer, enc func(out []int, text string) []int) error {
	var (
		ids  []int
		buf  []byte
		text string
	)
	line := 0
	for sc.Scan() {
		line++
		if err := ctx.Err(); err != nil {
			return err
		}
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 || raw[0] != '"' {
			return fmt.Errorf("stdin line %d: not a JSON string", line)
		}
		if err := json.Unmarshal(raw, &text); err != nil {
			return fmt.Errorf("stdin line %d: not a JSON string: %w", line, err)
		}
		ids = enc(ids[:0], text)
		buf = append(buf[:0], '[')
		for i, id := range ids {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendInt(buf, int64(id), 10)
		}
		buf = append(buf, ']', '\n')
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("stdin line %d: %w", line+1, err)
	}
	return nil
}
