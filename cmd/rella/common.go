package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/internal/runlock"
	"github.com/rella-project/rella/pipeline"
)

// configFlag registers -c/--config on fs.
func configFlag(fs *flag.FlagSet) *string {
	const usage = "run config: a YAML file or a built-in preset name, also accepted as the first positional argument (e.g. configs/quickstart.yaml, ml1m-zeroshot)"
	p := fs.String("c", "", usage)
	fs.StringVar(p, "config", "", usage)
	return p
}

// overrideArg matches a key=value override: a dotted key, then "=".
var overrideArg = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=`)

// loadRun parses the flags (anywhere on the line), takes the config from
// -c or the one positional word that is not a key=value override, loads it
// with the overrides in order, and returns a Runner for it.
func loadRun(e *env, fs *flag.FlagSet, cfgPath *string, args []string) (*pipeline.Runner, error) {
	rest, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	var overrides []string
	for _, a := range rest {
		switch {
		case overrideArg.MatchString(a):
			overrides = append(overrides, a)
		case *cfgPath == "":
			*cfgPath = a
		default:
			return nil, usageErrorf("unexpected argument %q (the config is %q; overrides are key=value)", a, *cfgPath)
		}
	}
	if *cfgPath == "" {
		return nil, usageErrorf("-c CONFIG is required (or give the config as the first argument)")
	}
	if preset, ok := presetFor(*cfgPath); ok {
		if preset == *cfgPath {
			fmt.Fprintf(e.stderr, "rella: using the built-in preset %s\n", preset)
		} else {
			fmt.Fprintf(e.stderr, "rella: no file %s here; using the built-in preset %s\n", *cfgPath, preset)
		}
	}
	cfg, err := configs.Load(*cfgPath, overrides)
	if err != nil {
		return nil, err
	}
	return &pipeline.Runner{Cfg: cfg, Log: e.log, Progress: e.stderr, Out: e.stdout}, nil
}

// presetFor reports the built-in preset configs.Load reads for path: one
// exists when path names no file but its base name is a preset's.
func presetFor(path string) (string, bool) {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	name := strings.TrimSuffix(filepath.Base(path), ".yaml")
	if slices.Contains(configs.Presets(), name) {
		return name, true
	}
	return "", false
}

// needs says what a command will use, for the checks made before any data is loaded.
type needs struct {
	model bool // the model folder, its tokenizer and model.device
}

// claim locks the run's output folder for this command (failing at once,
// naming the holder, when another rella writes there), which also proves
// the folder is writable, and then checks that the model, tokenizer and
// device the command needs are there. The caller releases the lock when done.
func claim(e *env, r *pipeline.Runner, name string, args []string, n needs) (release func(), err error) {
	lock, err := runlock.Acquire(r.Cfg.OutputDir, e.commandLine(name, args))
	if err != nil {
		return nil, fmt.Errorf("output_dir: %w", err)
	}
	release = func() {
		if err := lock.Release(); err != nil {
			e.log.Warn("output_dir: releasing the lock", "file", lock.Path(), "err", err)
		}
	}
	if n.model {
		if err := checkModel(r); err != nil {
			release()
			return nil, err
		}
	}
	return release, nil
}

// checkModel fails early, before data is loaded, when the model folder, the
// tokenizer, an adapter or the device the config names is missing.
func checkModel(r *pipeline.Runner) error {
	c := r.Cfg
	if err := checkDevice(c.Model.Device, c.Model.DeviceIndex); err != nil {
		return fmt.Errorf("model.device=%s: %w", c.Model.Device, err)
	}
	if c.Model.Adapter != "" {
		if _, err := os.Stat(filepath.Join(c.Model.Adapter, "adapter_config.json")); err != nil {
			return fmt.Errorf("model.adapter: %s holds no PEFT adapter (adapter_config.json): %w", c.Model.Adapter, err)
		}
	}
	if c.Model.Path == "" {
		return errors.New("model.path: not set (a HF LLaMA folder: config.json, safetensors, tokenizer)")
	}
	_, err := os.Stat(filepath.Join(c.Model.Path, "config.json"))
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist) && c.Generate.Model:
		// the run writes the model first; it copies generate.tokenizer
		if t := c.Generate.Tokenizer; t != "" {
			if err := checkTokenizer(t); err != nil {
				return fmt.Errorf("generate.tokenizer: %w", err)
			}
		}
		if c.Model.Tokenizer != "" {
			if err := checkTokenizer(c.Model.Tokenizer); err != nil {
				return fmt.Errorf("model.tokenizer: %w", err)
			}
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("model.path: %s is not a model folder (no config.json); set model.path, or generate.model=true for a small random model", c.Model.Path)
	default:
		return fmt.Errorf("model.path: %w", err)
	}
	tok, key := c.Model.Tokenizer, "model.tokenizer"
	if tok == "" {
		tok, key = c.Model.Path, "model.path"
	}
	if err := checkTokenizer(tok); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return checkMemory(r)
}

// checkTokenizer checks that path is a tokenizer file, or a folder holding
// tokenizer.model or tokenizer.json (what tokenizer.Load reads).
func checkTokenizer(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no tokenizer at %s: no such file or folder", path)
	}
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	if !st.IsDir() {
		return nil
	}
	for _, name := range []string{"tokenizer.model", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(path, name)); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s: no tokenizer.model or tokenizer.json in the folder", path)
}

// usesModel reports whether any of the stages loads the model.
func usesModel(stages []string) bool {
	for _, s := range stages {
		switch s {
		case "embed", "score", "train":
			return true
		}
	}
	return false
}
