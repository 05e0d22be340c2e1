package main

import (
	"flag"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/pipeline"
)

// configFlag registers -c/--config on fs.
func configFlag(fs *flag.FlagSet) *string {
	p := fs.String("c", "", "run config (a YAML file or a preset name)")
	fs.StringVar(p, "config", "", "run config (a YAML file or a preset name)")
	return p
}

// loadRun parses the flags, loads the config with the key=value overrides
// left on the command line, and returns a Runner for it.
func loadRun(e *env, fs *flag.FlagSet, cfgPath *string, args []string) (*pipeline.Runner, error) {
	rest, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if *cfgPath == "" {
		return nil, usageErrorf("-c CONFIG is required")
	}
	for _, a := range rest {
		if !containsRune(a, '=') {
			return nil, usageErrorf("unexpected argument %q (overrides are key=value)", a)
		}
	}
	cfg, err := configs.Load(*cfgPath, rest)
	if err != nil {
		return nil, err
	}
	return &pipeline.Runner{Cfg: cfg, Log: e.log, Progress: e.stderr, Out: e.stdout}, nil
}

func containsRune(s string, r rune) bool {
	for _, c := range s {
		if c == r {
			return true
		}
	}
	return false
}
