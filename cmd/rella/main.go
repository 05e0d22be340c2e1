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
}

// command is one subcommand of rella.
type command struct {
	name    string
	summary string // one line for the command list
	usage   string // the synopsis, e.g. "rella prompts -c CONFIG --split train|valid|test [--limit N]"
	run     func(ctx context.Context, e *env, args []string) error
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
		embedCommand(), retrieveCommand(), trainCommand(), runCommand(), studyCommand(),
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	return cmds
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	os.Exit(runMain(ctx, e, os.Args[1:]))
}

// runMain dispatches args to a subcommand and maps its error to an exit code.
func runMain(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printCommands(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			fmt.Fprintf(e.stderr, "usage: %s\n", c.usage)
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
	b.WriteString("usage: rella COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-12s %s\n", c.name, c.summary)
	}
	io.WriteString(w, b.String())
}

// newFlags makes a FlagSet that reports errors instead of exiting, and prints nothing itself.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args, turning flag mistakes into usage errors.
// Go's flag package stops at the first non-flag; rella lets flags and
// positional arguments (such as key=value overrides) mix.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}
