package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// programName is how the user ran rella, quoted for a shell, for the
// commands rella prints back: os.Args[0] as typed (so "./bin/rella" pastes
// back where it was run); for a binary in a temporary build folder (go run),
// "go run ./cmd/rella" when run from the repository root, else "rella".
func programName(arg0 string) string {
	if arg0 == "" {
		return "rella"
	}
	if strings.Contains(arg0, "go-build") || strings.HasPrefix(arg0, os.TempDir()+string(filepath.Separator)) {
		if _, err := os.Stat(filepath.Join("cmd", "rella", "main.go")); err == nil {
			return "go run ./cmd/rella"
		}
		return "rella"
	}
	return shellQuote(arg0)
}

// plainWord matches the words a POSIX shell reads back unchanged without quotes.
var plainWord = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellQuote quotes s for a POSIX shell: plain words stay as they are,
// anything else goes in single quotes (a ' inside becomes '\”).
func shellQuote(s string) string {
	if plainWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellJoin renders a command line a POSIX shell splits back into words.
func shellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}

// commandLine is the command as the user typed it: program, subcommand and
// every argument, quoted for a shell.
func (e *env) commandLine(name string, args []string) string {
	return e.program() + " " + shellJoin(append([]string{name}, args...))
}

// resumeLine is the command that continues this run: the same command line
// (config, flags and every override, in their order) with --resume once.
func (e *env) resumeLine(name string, args []string) string {
	words := []string{name}
	var tail []string // after "--" every word is positional
	for i, a := range args {
		if a == "--" {
			tail = args[i:]
			break
		}
		if isFlagNamed(a, "resume") {
			continue
		}
		words = append(words, a)
	}
	words = append(append(words, "--resume"), tail...)
	return e.program() + " " + shellJoin(words)
}

// isFlagNamed reports whether arg is the flag name (-name, --name, -name=v, --name=v).
func isFlagNamed(arg, name string) bool {
	a := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	if a == arg {
		return false
	}
	a, _, _ = strings.Cut(a, "=")
	return a == name
}

// program is the program part of a printed command line, already quoted.
func (e *env) program() string {
	if e.prog == "" {
		return "rella"
	}
	return e.prog
}
