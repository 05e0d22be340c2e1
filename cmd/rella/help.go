package main

import (
	"flag"
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"sort"
	"strings"
)

// printHelp writes a command's usage, summary, flags (with aliases, value
// names, meanings and defaults) and examples.
func printHelp(w io.Writer, c command, fs *flag.FlagSet) {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s\n", c.usage, c.summary)
	if fs != nil {
		if lines := flagLines(fs); len(lines) > 0 {
			b.WriteString("\nflags:\n")
			for _, l := range lines {
				b.WriteString(l)
			}
		}
	}
	if len(c.examples) > 0 {
		b.WriteString("\nexamples:\n")
		for _, ex := range c.examples {
			fmt.Fprintf(&b, "  %s\n", ex)
		}
	}
	io.WriteString(w, b.String())
}

// flagGroup is one flag and its aliases (flags sharing one variable, like -c and --config).
type flagGroup struct {
	names []string
	f     *flag.Flag
}

func flagLines(fs *flag.FlagSet) []string {
	var groups []*flagGroup
	byVar := map[uintptr]*flagGroup{}
	fs.VisitAll(func(f *flag.Flag) {
		var key uintptr
		if v := reflect.ValueOf(f.Value); v.Kind() == reflect.Pointer {
			key = v.Pointer()
		}
		if g, ok := byVar[key]; ok && key != 0 {
			g.names = append(g.names, f.Name)
			return
		}
		g := &flagGroup{names: []string{f.Name}, f: f}
		groups = append(groups, g)
		byVar[key] = g
	})
	var lines []string
	for _, g := range groups {
		sort.Slice(g.names, func(i, j int) bool { return len(g.names[i]) < len(g.names[j]) })
		var spell []string
		for _, n := range g.names {
			if len(n) == 1 {
				spell = append(spell, "-"+n)
			} else {
				spell = append(spell, "--"+n)
			}
		}
		head := strings.Join(spell, ", ")
		arg, usage := flag.UnquoteUsage(g.f)
		if arg != "" {
			if !strings.Contains(g.f.Usage, "`") {
				arg = strings.ToUpper(strings.ReplaceAll(g.names[len(g.names)-1], "-", "_"))
			}
			head += " " + arg
		}
		switch g.f.DefValue {
		case "", "0", "false":
		default:
			usage += fmt.Sprintf(" (default %s)", g.f.DefValue)
		}
		if len(head) <= 22 {
			lines = append(lines, fmt.Sprintf("  %-22s %s\n", head, usage))
		} else {
			lines = append(lines, fmt.Sprintf("  %s\n  %-22s %s\n", head, "", usage))
		}
	}
	return lines
}

// versionLine says which rella this is: the module version and, when the
// binary was built from a git checkout, its commit.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "rella (no build information in this binary)"
	}
	return formatVersion(bi)
}

func formatVersion(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(unknown version)"
	}
	s := "rella " + v
	var rev, when string
	modified := false
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.time":
			when = kv.Value
		case "vcs.modified":
			modified = kv.Value == "true"
		}
	}
	if rev != "" {
		s += " commit " + rev
		if when != "" {
			s += " (" + when + ")"
		}
		if modified {
			s += " with uncommitted changes"
		}
	} else {
		s += " (commit unknown: not built from a git checkout)"
	}
	if bi.GoVersion != "" {
		s += ", " + bi.GoVersion
	}
	return s
}
