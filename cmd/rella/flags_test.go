package main

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// tinyPrepareConfig writes a config whose stages only prepare a small
// synthetic dataset: cheap enough to run through the command line.
func tinyPrepareConfig(t *testing.T, dir string) string {
	return writeFile(t, filepath.Join(dir, "tiny.yaml"), `
seed: 3
output_dir: `+dir+`/out
stages: [prepare]
generate: {data: true, data_users: 14, data_items: 40}
data: {dataset: ml-1m, dir: `+dir+`/source, history_len: 3}
`)
}

// Flags may come before or after the positional config, as users type them.
func TestFlagsBeforeAndAfterTheConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyPrepareConfig(t, dir)
	for _, args := range [][]string{
		{"run", cfg, "--resume"},
		{"run", "--resume", cfg},
		{"run", "--resume", cfg, "seed=4"},
		{"run", "seed=4", cfg, "--resume"},
		{"prepare", cfg},
		{"prepare", "seed=5", "--config", cfg},
	} {
		if code, _, stderr := rella(t, args...); code != 0 {
			t.Errorf("rella %q: exit %d\n%s", args, code, stderr)
		}
	}
	// the flag after the config is parsed: its bad value is reported
	code, _, stderr := rella(t, "score", cfg, "--split", "dev")
	if code != 2 || !strings.Contains(stderr, `--split must be train, valid or test, got "dev"`) {
		t.Errorf("rella score CONFIG --split dev: exit %d, %q", code, stderr)
	}
	code, _, stderr = rella(t, "prepare", cfg, "other.yaml")
	if code != 2 || !strings.Contains(stderr, `unexpected argument "other.yaml"`) {
		t.Errorf("two configs: exit %d, %q", code, stderr)
	}
}

func TestForceWithoutResumeIsRefused(t *testing.T) {
	for _, cmd := range []string{"train", "run"} {
		code, _, stderr := rella(t, cmd, "quickstart", "--force")
		if code != 2 || !strings.Contains(stderr, "--force only applies with --resume") {
			t.Errorf("rella %s quickstart --force: exit %d, %q", cmd, code, stderr)
		}
	}
}

// A config path that names no file but a preset's name says the preset is used.
func TestMissingConfigFileFallsBackToPresetAndSaysSo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "configs", "quickstart.yaml")
	code, _, stderr := rella(t, "train", path, "--force")
	if !strings.Contains(stderr, "no file "+path+" here; using the built-in preset quickstart") {
		t.Errorf("exit %d, stderr %q: want the preset named", code, stderr)
	}
	code, _, stderr = rella(t, "train", "-c", filepath.Join(t.TempDir(), "mine.yaml"))
	if code != 1 || strings.Contains(stderr, "built-in preset mine") || !strings.Contains(stderr, "no such file") {
		t.Errorf("no file and no preset: exit %d, %q", code, stderr)
	}
}

// An override that fails validation is named, not the preset's line.
func TestOverrideErrorNamesTheOverride(t *testing.T) {
	code, _, stderr := rella(t, "prepare", "quickstart", "model.device=tpu")
	if code != 1 || !strings.Contains(stderr, "override model.device=tpu: model.device: must be cpu or gpu") || strings.Contains(stderr, "quickstart.yaml:") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// `rella help CMD` and `rella CMD -h` list every flag with its meaning, and
// examples whose flags are the command's own.
func TestHelpListsEveryFlagAndExamples(t *testing.T) {
	for _, c := range commands() {
		code, stdout, stderr := rella(t, "help", c.name)
		if code != 0 || !strings.Contains(stdout, "usage: "+c.usage) {
			t.Errorf("rella help %s: exit %d, stdout %q, stderr %q", c.name, code, stdout, stderr)
			continue
		}
		code, _, stderr2 := rella(t, c.name, "-h")
		if code != 0 || stderr2 != stdout {
			t.Errorf("rella %s -h: exit %d, output differs from rella help %s:\n%s", c.name, code, c.name, stderr2)
		}
		err := c.run(context.Background(), &env{}, []string{"-h"})
		var he helpError
		if !errors.As(err, &he) {
			t.Errorf("%s -h: %v, want a help request carrying the flags", c.name, err)
			continue
		}
		flags := map[string]bool{}
		he.fs.VisitAll(func(f *flag.Flag) {
			flags[f.Name] = true
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%s: flag -%s has no meaning", c.name, f.Name)
			}
			spelled := "--" + f.Name
			if len(f.Name) == 1 {
				spelled = "-" + f.Name
			}
			if !strings.Contains(stdout, "  "+spelled) && !strings.Contains(stdout, ", "+spelled) {
				t.Errorf("rella help %s does not list %s:\n%s", c.name, spelled, stdout)
			}
		})
		if len(c.examples) == 0 || !strings.Contains(stdout, "examples:\n") {
			t.Errorf("rella help %s shows no examples", c.name)
		}
		for _, ex := range c.examples {
			_, cmdline, ok := strings.Cut(ex, "rella "+c.name)
			if !ok {
				t.Errorf("%s: example %q does not run rella %s", c.name, ex, c.name)
				continue
			}
			for _, w := range strings.Fields(cmdline) {
				if w == "<" || w == "|" {
					break
				}
				if strings.HasPrefix(w, "-") {
					name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
					if !flags[name] {
						t.Errorf("%s: example %q uses %s, which is not one of its flags", c.name, ex, w)
					}
				}
			}
		}
	}
	if code, _, stderr := rella(t, "help", "frobnicate"); code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("rella help frobnicate: exit %d, %q", code, stderr)
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		code, stdout, _ := rella(t, arg)
		if code != 0 || !strings.HasPrefix(stdout, "rella ") {
			t.Errorf("rella %s: exit %d, %q", arg, code, stdout)
		}
	}
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/rella-project/rella", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "12b7ae1f00"}, {Key: "vcs.time", Value: "2026-12-03T20:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := formatVersion(bi)
	for _, w := range []string{"rella v0.3.0", "commit 12b7ae1f00", "2026-12-03T20:00:00Z", "uncommitted", "go1.26.8"} {
		if !strings.Contains(got, w) {
			t.Errorf("version %q lacks %q", got, w)
		}
	}
	bi.Settings = nil
	if got := formatVersion(bi); !strings.Contains(got, "commit unknown") {
		t.Errorf("version without vcs info: %q", got)
	}
}
