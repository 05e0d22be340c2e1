// Command rella prepares ReLLa data, scores prompts with a LLaMA/Vicuna model,
// retrieves semantically relevant history (SUBR) and fine-tunes LoRA adapters (ReiT).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// env carries a command's streams and logger; tests substitute their own.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	prog   string // the program as invoked, shell-quoted, for the commands rella prints back; "" = "rella"
	// lookupEnv reads the launcher's variables (--shard auto, distributed
	// training); nil = os.LookupEnv. Tests inject their own.
	lookupEnv func(key string) (string, bool)
}

// getenv reads one environment variable through e.lookupEnv.
func (e *env) getenv(key string) (string, bool) {
	if e.lookupEnv != nil {
		return e.lookupEnv(key)
	}
	return os.LookupEnv(key)
}

// command is one subcommand of rella.
type command struct {
	name     string
	summary  string   // one line for the command list
	usage    string   // the synopsis, e.g. "rella prompts -c CONFIG --split train|valid|test [--limit N]"
	examples []string // command lines `rella help NAME` shows
	run      func(ctx context.Context, e *env, args []string) error
}

// usageError is a mistake in the command line: rella prints the usage after it.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// usageErrorf builds a usageError.
func usageErrorf(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// commands lists every subcommand. Each lives in its own file.
func commands() []command {
	cmds := []command{
		// each subcommand file adds its constructor here
		initModelCommand(), logitsCommand(), gpuSelftestCommand(), gradsCommand(), convertCommand(),
		tokenizeCommand(),
		prepareCommand(), promptsCommand(), scoreCommand(),
		embedCommand(), retrieveCommand(), trainCommand(), runCommand(), studyCommand(), mergeCommand(),
		baselineCommand(),
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	return cmds
}

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go watchSignals(sigs, cancel, os.Stderr, os.Exit)
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, prog: programName(os.Args[0]),
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	code := runMain(ctx, e, os.Args[1:])
	cancel(nil)
	os.Exit(code)
}

// runMain dispatches args to a subcommand and maps its error to an exit code.
func runMain(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		printCommands(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "--version", "-version", "version":
		fmt.Fprintln(e.stdout, versionLine())
		return 0
	case "help":
		if len(args) == 1 {
			printCommands(e.stdout)
			return 0
		}
		if len(args) > 2 {
			fmt.Fprintf(e.stderr, "rella help: one command at a time, got %q\n", args[1:])
			return 2
		}
		if _, ok := findCommand(args[1]); !ok {
			fmt.Fprintf(e.stderr, "rella help: unknown command %q\n", args[1])
			printCommands(e.stderr)
			return 2
		}
		// every command parses its flags first, so -h prints its help and runs nothing
		ee := *e
		ee.stderr = e.stdout // asked-for help goes to stdout
		return runMain(ctx, &ee, []string{args[1], "-h"})
	}
	if c, ok := findCommand(args[0]); ok {
		err := c.run(ctx, e, args[1:])
		var he helpError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &he):
			printHelp(e.stderr, c, he.fs)
			return 0
		case errors.Is(err, flag.ErrHelp):
			printHelp(e.stderr, c, nil)
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(e.stderr, "rella %s: %v\nusage: %s\n", c.name, err, c.usage)
			return 2
		}
		fmt.Fprintf(e.stderr, "rella %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(e.stderr, "rella: unknown command %q\n", args[0])
	printCommands(e.stderr)
	return 2
}

func printCommands(w io.Writer) {
	var b strings.Builder
	b.WriteString("usage: rella COMMAND [flags] [CONFIG] [key=value ...]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-12s %s\n", c.name, c.summary)
	}
	b.WriteString("\n`rella help COMMAND` (or `rella COMMAND -h`) lists a command's flags with examples;\n`rella --version` prints the version and commit.\n")
	io.WriteString(w, b.String())
}

// findCommand returns the subcommand called name.
func findCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// newFlags makes a FlagSet that reports errors instead of exiting, and prints nothing itself.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// helpError is a -h/--help on the command line: rella prints the command's
// usage, flags and examples and exits 0.
type helpError struct{ fs *flag.FlagSet }

func (helpError) Error() string { return flag.ErrHelp.Error() }
func (helpError) Unwrap() error { return flag.ErrHelp }

// parseFlags parses args, turning flag mistakes into usage errors.
// Go's flag package stops at the first non-flag; rella lets flags and
// positional arguments (the config, key=value overrides) mix in any order,
// as in `rella run configs/x.yaml --resume`. After "--" every word is positional.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, helpError{fs}
			}
			return nil, usageError{err.Error()}
		}
		left := fs.Args()
		if n := len(args) - len(left); n > 0 && args[n-1] == "--" {
			return append(rest, left...), nil
		}
		if len(left) == 0 {
			return rest, nil
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}
