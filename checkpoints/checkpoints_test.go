package checkpoints

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/lora"
	"github.com/rella-project/rella/safetensors"
)

func contents(step, micro int) Contents {
	o := lora.Options{R: 2, Alpha: 4, Dropout: 0, TargetModules: []string{"q_proj"}}
	ps := lora.Init(o, []lora.Target{{Module: "model.layers.0.self_attn.q_proj", In: 3, Out: 4}}, int64(step))
	ps[1].Value[3] = float32(step) + 0.5
	return Contents{Step: step, Micro: micro, LoRA: o, BaseModel: "m", Params: ps,
		Tensors: []safetensors.Tensor{safetensors.F32("m", []int{2}, []float32{float32(step), -1.5})},
		State:   map[string]int{"step": step, "micro": micro}, Config: []byte("seed: 1\n")}
}

func TestSaveLoad(t *testing.T) {
	root := t.TempDir()
	c := contents(12, 3)
	dir, err := Save(root, c)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != "checkpoint-12-m3" {
		t.Errorf("dir %s", dir)
	}
	l, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.Step != 12 || l.Micro != 3 || string(l.Config) != "seed: 1\n" || !strings.Contains(string(l.State), `"micro": 3`) {
		t.Errorf("loaded %+v", l)
	}
	for i, p := range c.Params {
		for j, v := range p.Value {
			if math.Float32bits(v) != math.Float32bits(l.Params[i].Value[j]) {
				t.Fatalf("%s[%d] = %v, want %v", p.Name, j, l.Params[i].Value[j], v)
			}
		}
	}
	if got := l.Tensors["m"]; len(got) != 2 || got[0] != 12 || got[1] != -1.5 {
		t.Errorf("tensor m = %v", got)
	}
	// No leftovers from the temporary folder.
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 {
		t.Errorf("root holds %d entries, want 1", len(ents))
	}
	// Saving the same name again replaces it with the new contents.
	c2 := contents(12, 3)
	c2.Tensors[0] = safetensors.F32("m", []int{2}, []float32{7, 7})
	if _, err := Save(root, c2); err != nil {
		t.Fatal(err)
	}
	if l, err := Load(dir); err != nil || l.Tensors["m"][0] != 7 {
		t.Errorf("replaced checkpoint: %v %v", err, l)
	}
}

func TestSaveFailureLeavesNothing(t *testing.T) {
	root := t.TempDir()
	c := contents(5, 0)
	c.Params = nil // lora.Save refuses an empty adapter
	if _, err := Save(root, c); err == nil || !strings.Contains(err.Error(), "empty adapter") {
		t.Fatalf("got %v, want the empty-adapter error", err)
	}
	c = contents(6, 0)
	c.State = math.NaN() // not JSON
	if _, err := Save(root, c); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Fatalf("got %v, want a state.json error", err)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 0 {
		t.Errorf("root holds %v after failed saves", ents)
	}
	// An existing checkpoint survives a failed save of the same name.
	good, _ := Save(root, contents(7, 0))
	bad := contents(7, 0)
	bad.State = math.Inf(1)
	if _, err := Save(root, bad); err == nil {
		t.Fatal("no error")
	}
	if err := Verify(good); err != nil {
		t.Errorf("existing checkpoint damaged by a failed save: %v", err)
	}
}

func TestListOrder(t *testing.T) {
	root := t.TempDir()
	for _, n := range []string{"checkpoint-10", "checkpoint-9", "checkpoint-9-m2", "checkpoint-9-m10", "checkpoint-x", "checkpoint-09", ".tmp-checkpoint-11-123", "best"} {
		os.Mkdir(filepath.Join(root, n), 0o755)
	}
	all, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range all {
		got = append(got, filepath.Base(c.Dir))
	}
	if strings.Join(got, " ") != "checkpoint-9 checkpoint-9-m2 checkpoint-9-m10 checkpoint-10" {
		t.Errorf("List = %v", got)
	}
}

func TestLatestSkipsBrokenCheckpoints(t *testing.T) {
	breakers := map[string]func(dir string){
		"incomplete": func(dir string) { os.Remove(filepath.Join(dir, CompleteFile)) },
		"truncated": func(dir string) {
			p := filepath.Join(dir, AdapterDir, lora.WeightsFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-1], 0o644)
		},
		"sha256": func(dir string) {
			p := filepath.Join(dir, StateFile)
			b, _ := os.ReadFile(p)
			b[3] ^= 0x20
			os.WriteFile(p, b, 0o644)
		},
		"does not match the sha256": func(dir string) {
			p := filepath.Join(dir, ManifestFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, append(b, ' '), 0o644)
		},
		"no such file": func(dir string) { os.Remove(filepath.Join(dir, OptimizerFile)) },
	}
	for why, brk := range breakers {
		t.Run(why, func(t *testing.T) {
			root := t.TempDir()
			for _, s := range []int{4, 8} {
				if _, err := Save(root, contents(s, 0)); err != nil {
					t.Fatal(err)
				}
			}
			newest, _ := Save(root, contents(8, 2))
			// A half-made temporary folder from a crashed save is ignored.
			os.Mkdir(filepath.Join(root, ".tmp-checkpoint-12-99"), 0o755)
			brk(newest)
			var buf bytes.Buffer
			c, ok, err := Latest(root, slog.New(slog.NewTextHandler(&buf, nil)))
			if err != nil || !ok || filepath.Base(c.Dir) != "checkpoint-8" {
				t.Fatalf("Latest = %+v %v %v, want checkpoint-8", c, ok, err)
			}
			if !strings.Contains(buf.String(), "checkpoint-8-m2") || !strings.Contains(buf.String(), why) {
				t.Errorf("warning %q does not name checkpoint-8-m2 and %q", buf.String(), why)
			}
			if _, err := Load(newest); err == nil {
				t.Error("Load of a broken checkpoint: no error")
			}
		})
	}
	if _, ok, err := Latest(filepath.Join(t.TempDir(), "none"), nil); ok || err != nil {
		t.Errorf("missing root: %v %v", ok, err)
	}
}

func TestPrune(t *testing.T) {
	root := t.TempDir()
	for _, s := range []int{1, 2, 3, 4, 5} {
		Save(root, contents(s, 0))
	}
	Save(root, contents(5, 1))
	os.Remove(filepath.Join(root, "checkpoint-1", CompleteFile)) // broken: left alone
	os.Mkdir(filepath.Join(root, ".tmp-checkpoint-9-1"), 0o755)
	if err := Prune(root, 2, func(c Checkpoint) bool { return c.Step == 2 }, nil); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(root)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != "checkpoint-1 checkpoint-2 checkpoint-5 checkpoint-5-m1" {
		t.Errorf("after Prune: %v", got)
	}
}

func TestCompareFingerprint(t *testing.T) {
	a := map[string]string{"seed": "1", "lr": "0.001", "data": "ab"}
	if err := CompareFingerprint(a, map[string]string{"data": "ab", "lr": "0.001", "seed": "1"}); err != nil {
		t.Errorf("equal maps: %v", err)
	}
	err := CompareFingerprint(a, map[string]string{"seed": "2", "lr": "0.001", "model": "x"})
	if !errors.Is(err, ErrChangedRun) || !strings.HasSuffix(err.Error(), "data: ab -> (not set); model: (not set) -> x; seed: 1 -> 2") {
		t.Errorf("got %v", err)
	}
}

func TestNameParse(t *testing.T) {
	for _, c := range []struct{ step, micro int }{{0, 0}, {12, 0}, {12, 5}} {
		s, m, ok := parseName(Name(c.step, c.micro))
		if !ok || s != c.step || m != c.micro {
			t.Errorf("parseName(Name(%d, %d)) = %d %d %v", c.step, c.micro, s, m, ok)
		}
	}
	for _, bad := range []string{"checkpoint-", "checkpoint--1", "checkpoint-1-m0", "checkpoint-1-m", "checkpoint-01", "ckpt-1"} {
		if _, _, ok := parseName(bad); ok {
			t.Errorf("parseName(%q) accepted", bad)
		}
	}
}

// TestExtraFiles: Contents.Files land at the folder's top level and are in
// the manifest (a change to one makes the checkpoint fail to verify);
// reserved or nested names are refused and leave nothing behind.
func TestExtraFiles(t *testing.T) {
	root := t.TempDir()
	c := contents(3, 0)
	c.Files = map[string][]byte{"trainer_state.json": []byte(`{"global_step": 3}` + "\n")}
	dir, err := Save(root, c)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "trainer_state.json")
	if b, err := os.ReadFile(p); err != nil || string(b) != "{\"global_step\": 3}\n" {
		t.Fatalf("trainer_state.json: %q %v", b, err)
	}
	if err := Verify(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte(`{"global_step": 4}`+"\n"), 0o644)
	if err := Verify(dir); err == nil || !strings.Contains(err.Error(), "trainer_state.json") {
		t.Errorf("tampered extra file: %v", err)
	}
	for _, bad := range []string{StateFile, "sub/x.json", ""} {
		c := contents(4, 0)
		c.Files = map[string][]byte{bad: []byte("x")}
		if _, err := Save(root, c); err == nil {
			t.Errorf("extra file %q accepted", bad)
		}
	}
	if all, _ := List(root); len(all) != 1 {
		t.Errorf("refused saves left %d checkpoints", len(all)-1)
	}
}
