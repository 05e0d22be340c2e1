package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// shellWords splits line the way a POSIX shell does, by asking sh.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to parse the command line with")
	}
	out, err := exec.Command(sh, "-c", `for w in `+line+`; do printf '%s\0' "$w"; done`).Output()
	if err != nil {
		t.Fatalf("sh could not parse %s: %v", line, err)
	}
	words := strings.Split(string(out), "\x00")
	return words[:len(words)-1]
}

func TestShellJoinRoundTripsThroughSh(t *testing.T) {
	words := []string{"rella", "train", "-c", "configs/quickstart.yaml", "output_dir=runs/my run", "data.dir=/data/it's here",
		`prompt.template=Say "yes"`, "x=$HOME", "y=`id`", `z=back\slash`, "", "multi\nline", "glob=*.yaml", "semi=a;b",
		"tab=\tx", "unicode=Ünïcödé", "--resume", "a=!bang", "h=#hash", "p=(paren)", "amp=a&b", "t=~/x"}
	line := shellJoin(words)
	if got := shellWords(t, line); !slices.Equal(got, words) {
		t.Errorf("sh splits %s\ninto %q,\nwant %q", line, got, words)
	}
	if got := shellJoin([]string{"rella", "run", "configs/x.yaml", "output_dir=runs/a", "--resume"}); got != "rella run configs/x.yaml output_dir=runs/a --resume" {
		t.Errorf("plain words are quoted needlessly: %s", got)
	}
}

func TestResumeLineRepeatsTheWholeCommand(t *testing.T) {
	cases := []struct {
		prog string
		args []string
		want []string
	}{
		{"", []string{"-c", "configs/quickstart.yaml", "output_dir=X", "training.max_steps=20"},
			[]string{"rella", "train", "-c", "configs/quickstart.yaml", "output_dir=X", "training.max_steps=20", "--resume"}},
		// a run that was itself resumed says --resume once
		{"./bin/rella", []string{"configs/q.yaml", "--resume", "--force", "lora.lora_r=4", "-resume=true"},
			[]string{"./bin/rella", "train", "configs/q.yaml", "--force", "lora.lora_r=4", "--resume"}},
		{"'/opt/my tools/rella'", []string{"--config=my run.yaml", "output_dir=runs/a b"},
			[]string{"/opt/my tools/rella", "train", "--config=my run.yaml", "output_dir=runs/a b", "--resume"}},
		{"", []string{"-c", "q.yaml", "--", "--resume"},
			[]string{"rella", "train", "-c", "q.yaml", "--resume", "--", "--resume"}},
		{"go run ./cmd/rella", []string{"q.yaml"}, []string{"go", "run", "./cmd/rella", "train", "q.yaml", "--resume"}},
	}
	for _, c := range cases {
		e := &env{prog: c.prog}
		line := e.resumeLine("train", c.args)
		if got := shellWords(t, line); !slices.Equal(got, c.want) {
			t.Errorf("resume line %s\nsplits into %q,\nwant %q", line, got, c.want)
		}
	}
}

func TestProgramName(t *testing.T) {
	for arg0, want := range map[string]string{
		"rella":                           "rella",
		"./bin/rella":                     "./bin/rella",
		"/usr/local/bin/rella":            "/usr/local/bin/rella",
		"/opt/my tools/rella":             "'/opt/my tools/rella'",
		"/tmp/go-build123/b001/exe/rella": "rella", // go run outside the repository
		"":                                "rella",
	} {
		if got := programName(arg0); got != want {
			t.Errorf("programName(%q) = %q, want %q", arg0, got, want)
		}
	}
	// go run from the repository root pastes back as go run
	t.Chdir("../..")
	if got := programName("/tmp/go-build123/b001/exe/rella"); got != "go run ./cmd/rella" {
		t.Errorf("go run from the repository root: %q", got)
	}
}
