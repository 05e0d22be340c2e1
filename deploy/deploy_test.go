// Package deploy holds the job templates (Slurm, Kubernetes); its tests
// check them, and the Dockerfile at the root, without a cluster or Docker:
// the shell scripts pass bash -n and run against stand-ins for sbatch,
// srun, squeue and scontrol, the manifests parse and agree with each other.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/shard"
)

func TestShellSyntax(t *testing.T) {
	scripts, _ := filepath.Glob("slurm/*")
	scripts = append(scripts, "../scripts/fetch-nccl.sh")
	if len(scripts) < 5 {
		t.Fatalf("found only %v", scripts)
	}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
		info, err := os.Stat(s)
		if err != nil || info.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", s)
		}
	}
}

// sbatchOptions is the script's #SBATCH lines.
func sbatchOptions(t *testing.T, path string) []string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var opts []string
	for _, line := range strings.Split(string(src), "\n") {
		if o, ok := strings.CutPrefix(line, "#SBATCH "); ok {
			opts = append(opts, strings.TrimSpace(o))
		}
	}
	return opts
}

func requireOptions(t *testing.T, path string, want ...string) {
	t.Helper()
	have := sbatchOptions(t, path)
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("%s: no #SBATCH %s (has %v)", path, w, have)
		}
	}
}

// fakeBin writes stand-ins for Slurm's commands into a folder for PATH: each
// appends "name arg arg..." to $FAKE_LOG and does what the case needs.
func fakeBin(t *testing.T) (dir, log string) {
	t.Helper()
	dir = t.TempDir()
	log = filepath.Join(dir, "calls.log")
	write := func(name, body string) {
		src := "#!/usr/bin/env bash\necho \"" + name + " $*\" >>\"$FAKE_LOG\"\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// sbatch --parsable prints "jobid;cluster" the first time, "jobid" after.
	write("sbatch", `n=$(grep -c '^sbatch ' "$FAKE_LOG"); if [ "$n" = 1 ]; then echo "4242;cluster1"; else echo 4243; fi`)
	write("srun", `echo "env MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT" >>"$FAKE_LOG"; exit "${FAKE_SRUN_STATUS:-0}"`)
	write("squeue", `echo "$FAKE_LEFT"`)
	write("scontrol", `if [ "$1 $2" = "show hostnames" ]; then printf 'gpu017\ngpu018\n'; fi`)
	write("rella", `exit 0`)
	return dir, log
}

func runScript(t *testing.T, bin, log string, env []string, script string, args ...string) (string, []string, error) {
	t.Helper()
	os.Remove(log)
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Env = append([]string{"PATH=" + bin + ":/usr/bin:/bin", "FAKE_LOG=" + log, "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	calls, _ := os.ReadFile(log)
	return string(out), strings.Split(strings.TrimSpace(string(calls)), "\n"), err
}

func TestSlurmScoring(t *testing.T) {
	requireOptions(t, "slurm/score-shard.sbatch", "--gres=gpu:1", "--requeue")
	bin, log := fakeBin(t)
	here, _ := filepath.Abs("slurm")
	out, calls, err := runScript(t, bin, log, nil, "slurm/submit-score.sh", "configs/ml1m-zeroshot.yaml", "8", "model.path=/models/v")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []string{
		"sbatch --parsable --array=0-7 --export=ALL,RELLA_SHARDS=8 " + here + "/score-shard.sbatch configs/ml1m-zeroshot.yaml model.path=/models/v",
		"sbatch --parsable --dependency=afterok:4242 --kill-on-invalid-dep=yes " + here + "/merge.sbatch configs/ml1m-zeroshot.yaml model.path=/models/v",
	}
	if !slices.Equal(calls, want) {
		t.Errorf("submit-score.sh called\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(out, "merge: job 4243") {
		t.Errorf("output %q", out)
	}
	for _, bad := range []string{"0", "x", ""} {
		if _, _, err := runScript(t, bin, log, nil, "slurm/submit-score.sh", "cfg", bad); err == nil {
			t.Errorf("SHARDS=%q accepted", bad)
		}
	}

	// A task of that array: what Slurm sets, plus the exported RELLA_SHARDS,
	// is a valid --shard auto, and the task runs rella score with it.
	for task := 0; task < 8; task++ {
		env := []string{"SLURM_ARRAY_TASK_ID=" + strconv.Itoa(task), "SLURM_ARRAY_TASK_MIN=0", "SLURM_ARRAY_TASK_MAX=7",
			"SLURM_ARRAY_TASK_COUNT=8", "SLURM_ARRAY_TASK_STEP=1", "RELLA_SHARDS=8"}
		sp, _, err := shard.Auto(lookup(env), 0)
		if err != nil || sp != (shard.Spec{Index: task, Count: 8}) {
			t.Fatalf("task %d: shard.Auto = %v, %v", task, sp, err)
		}
		out, calls, err := runScript(t, bin, log, append(env, "RELLA="+filepath.Join(bin, "rella")), "slurm/score-shard.sbatch", "cfg.yaml", "k=v")
		if err != nil || len(calls) != 1 || calls[0] != "rella score -c cfg.yaml --shard auto k=v" {
			t.Fatalf("score-shard.sbatch: %v %q\n%s", err, calls, out)
		}
	}
	out, calls, err = runScript(t, bin, log, []string{"RELLA=" + filepath.Join(bin, "rella")}, "slurm/merge.sbatch", "cfg.yaml", "k=v")
	if err != nil || len(calls) != 1 || calls[0] != "rella merge -c cfg.yaml k=v" {
		t.Fatalf("merge.sbatch: %v %q\n%s", err, calls, out)
	}
}

func lookup(env []string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for _, kv := range env {
			if key, v, _ := strings.Cut(kv, "="); key == k {
				return v, true
			}
		}
		return "", false
	}
}

func TestSlurmTraining(t *testing.T) {
	requireOptions(t, "slurm/train.sbatch", "--signal=TERM@120", "--requeue", "--gpus-per-task=1")
	bin, log := fakeBin(t)
	base := []string{"SLURM_JOB_ID=123456", "SLURM_JOB_NODELIST=gpu[017-018]", "SLURM_NTASKS=8"}
	srun := "srun --kill-on-bad-exit=1 rella train -c ml1m-reit --resume model.path=/m"
	for _, c := range []struct {
		left    string
		status  int
		requeue bool
	}{
		{"3:10", 0, true},      // stopped by TERM@120: requeue
		{"0:04:59", 0, true},   // H:M:S form
		{"55", 0, true},        // seconds only
		{"10:00:00", 0, false}, // finished early
		{"1-00:00:00", 0, false},
		{"5:00", 0, false},
		{"UNLIMITED", 0, false},
		{"3:10", 3, false}, // a failed run is not requeued
	} {
		env := append(slices.Clone(base), "FAKE_LEFT="+c.left, fmt.Sprintf("FAKE_SRUN_STATUS=%d", c.status))
		out, calls, err := runScript(t, bin, log, env, "slurm/train.sbatch", "ml1m-reit", "model.path=/m")
		if c.status != 0 {
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != c.status {
				t.Errorf("left %s, srun status %d: script ended with %v", c.left, c.status, err)
			}
		} else if err != nil {
			t.Errorf("left %s: %v\n%s", c.left, err, out)
		}
		if !slices.Contains(calls, srun) {
			t.Errorf("left %s: no %q in %q", c.left, srun, calls)
		}
		if want := "env MASTER_ADDR=gpu017 MASTER_PORT=" + strconv.Itoa(20000+123456%20000); !slices.Contains(calls, want) {
			t.Errorf("left %s: srun did not see %q: %q", c.left, want, calls)
		}
		if got := slices.Contains(calls, "scontrol requeue 123456"); got != c.requeue {
			t.Errorf("left %s status %d: requeued %v, want %v (calls %q)", c.left, c.status, got, c.requeue, calls)
		}
	}
}

// docs reads every YAML document of a manifest file.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var out []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("%s: %v", path, err)
		}
		if d == nil {
			continue
		}
		for _, k := range []string{"apiVersion", "kind"} {
			if _, ok := d[k].(string); !ok {
				t.Fatalf("%s: a document without %s", path, k)
			}
		}
		if get(d, "metadata", "name") == nil {
			t.Fatalf("%s: a %s without metadata.name", path, d["kind"])
		}
		out = append(out, d)
	}
	return out
}

// get walks maps by key and lists by index ("0").
func get(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func one(t *testing.T, ds []map[string]any, kind string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, d := range ds {
		if d["kind"] == kind {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d documents of kind %s, want 1", len(found), kind)
	}
	return found[0]
}

func envOf(c any) map[string]any {
	m := map[string]any{}
	list, _ := get(c, "env").([]any)
	for _, e := range list {
		if v, ok := get(e, "value").(string); ok {
			m[str(get(e, "name"))] = v
		} else {
			m[str(get(e, "name"))] = get(e, "valueFrom")
		}
	}
	return m
}

func argsOf(c any) []string {
	var out []string
	list, _ := get(c, "args").([]any)
	for _, a := range list {
		out = append(out, str(a))
	}
	return out
}

// checkPod checks a Job's pod: the GPU count, non-root user, volumes that
// name defined claims, mounted at rella's paths; it returns the container.
func checkPod(t *testing.T, job map[string]any, claims map[string]bool, gpus int) any {
	t.Helper()
	name := str(get(job, "metadata", "name"))
	spec := get(job, "spec", "template", "spec")
	if r := str(get(spec, "restartPolicy")); r != "Never" && r != "OnFailure" {
		t.Errorf("%s: restartPolicy %q", name, r)
	}
	if uid, _ := get(spec, "securityContext", "runAsUser").(int); uid == 0 {
		t.Errorf("%s: runs as root", name)
	}
	c := get(spec, "containers", "0")
	if str(get(c, "image")) == "" {
		t.Errorf("%s: no image", name)
	}
	if got, _ := get(c, "resources", "limits", "nvidia.com/gpu").(int); got != gpus {
		t.Errorf("%s: %d GPUs, want %d", name, got, gpus)
	}
	vols := map[string]string{}
	list, _ := get(spec, "volumes").([]any)
	for _, v := range list {
		claim := str(get(v, "persistentVolumeClaim", "claimName"))
		if !claims[claim] {
			t.Errorf("%s: volume %s uses claim %q, not defined in pvc.yaml", name, get(v, "name"), claim)
		}
		vols[str(get(v, "name"))] = claim
	}
	mounts := map[string]string{}
	list, _ = get(c, "volumeMounts").([]any)
	for _, m := range list {
		vol := str(get(m, "name"))
		if _, ok := vols[vol]; !ok {
			t.Errorf("%s: mount of undefined volume %q", name, vol)
		}
		mounts[str(get(m, "mountPath"))] = vols[vol]
	}
	if mounts["/runs"] != "rella-runs" {
		t.Errorf("%s: /runs is not the rella-runs claim (%v)", name, mounts)
	}
	return c
}

func TestKubernetes(t *testing.T) {
	claims := map[string]bool{}
	for _, d := range docs(t, "k8s/pvc.yaml") {
		if d["kind"] != "PersistentVolumeClaim" {
			t.Fatalf("pvc.yaml holds a %s", d["kind"])
		}
		claims[str(get(d, "metadata", "name"))] = true
		if get(d, "spec", "resources", "requests", "storage") == nil {
			t.Errorf("claim %s requests no storage", get(d, "metadata", "name"))
		}
	}

	// Scoring: an Indexed Job whose completions, parallelism and
	// RELLA_SHARDS agree, running rella score --shard auto on a preset.
	score := one(t, docs(t, "k8s/score-indexed-job.yaml"), "Job")
	if get(score, "spec", "completionMode") != "Indexed" {
		t.Error("scoring Job is not Indexed")
	}
	c := checkPod(t, score, claims, 1)
	n := str(get(score, "spec", "completions"))
	if p := str(get(score, "spec", "parallelism")); n == "" || p != n || envOf(c)["RELLA_SHARDS"] != n {
		t.Errorf("completions %s, parallelism %s, RELLA_SHARDS %v: must be equal", n, p, envOf(c)["RELLA_SHARDS"])
	}
	args := argsOf(c)
	if len(args) < 5 || args[0] != "score" || !slices.Equal(args[len(args)-2:], []string{"--shard", "auto"}) {
		t.Errorf("scoring args %q", args)
	}
	cfg := args[slices.Index(args, "-c")+1]
	if _, err := os.Stat(filepath.Join("../configs", cfg+".yaml")); err != nil {
		t.Errorf("scoring config %q is no preset: %v", cfg, err)
	}
	// Each pod's environment is a valid --shard auto.
	count, _ := strconv.Atoi(n)
	for i := 0; i < count; i++ {
		sp, _, err := shard.Auto(lookup([]string{"JOB_COMPLETION_INDEX=" + strconv.Itoa(i), "RELLA_SHARDS=" + n}), 0)
		if err != nil || sp.Index != i || sp.Count != count {
			t.Errorf("pod %d: %v %v", i, sp, err)
		}
	}

	merge := one(t, docs(t, "k8s/merge-job.yaml"), "Job")
	mc := checkPod(t, merge, claims, 0)
	if margs := argsOf(mc); !slices.Equal(margs, []string{"merge", "-c", cfg}) {
		t.Errorf("merge args %q, want merge -c %s", margs, cfg)
	}

	// Training: an Indexed Job, one GPU per pod, RANK from the completion
	// index, rank 0 reachable through a headless Service.
	ds := docs(t, "k8s/train-job.yaml")
	svc, train := one(t, ds, "Service"), one(t, ds, "Job")
	if get(train, "spec", "completionMode") != "Indexed" {
		t.Error("training Job is not Indexed")
	}
	tc := checkPod(t, train, claims, 1)
	env := envOf(tc)
	n = str(get(train, "spec", "completions"))
	if p := str(get(train, "spec", "parallelism")); n == "" || p != n || env["WORLD_SIZE"] != n {
		t.Errorf("completions %s, parallelism %s, WORLD_SIZE %v: must be equal", n, p, env["WORLD_SIZE"])
	}
	if got := str(get(env["RANK"], "fieldRef", "fieldPath")); got != "metadata.annotations['batch.kubernetes.io/job-completion-index']" {
		t.Errorf("RANK comes from %q, want the completion index annotation", got)
	}
	job, sub, svcName := str(get(train, "metadata", "name")), str(get(train, "spec", "template", "spec", "subdomain")), str(get(svc, "metadata", "name"))
	if sub != svcName || str(get(svc, "spec", "clusterIP")) != "None" || str(get(svc, "spec", "selector", "job-name")) != job {
		t.Errorf("Service %s (clusterIP %v, selector %v) does not give the Job %s's pods names under subdomain %s",
			svcName, get(svc, "spec", "clusterIP"), get(svc, "spec", "selector"), job, sub)
	}
	if want := job + "-0." + svcName; env["MASTER_ADDR"] != want {
		t.Errorf("MASTER_ADDR %v, want %s (pod 0's name)", env["MASTER_ADDR"], want)
	}
	if str(get(svc, "spec", "ports", "0", "port")) != env["MASTER_PORT"] {
		t.Errorf("MASTER_PORT %v is not the Service's port %v", env["MASTER_PORT"], get(svc, "spec", "ports", "0", "port"))
	}
	targs := argsOf(tc)
	if len(targs) < 4 || targs[0] != "train" || !slices.Contains(targs, "--resume") {
		t.Errorf("training args %q", targs)
	}
	if g, _ := get(train, "spec", "template", "spec", "terminationGracePeriodSeconds").(int); g < 120 {
		t.Errorf("terminationGracePeriodSeconds %d: too short for the checkpoint on SIGTERM", g)
	}
	// Every pod's environment is a valid launch, with rank 0's address.
	size, _ := strconv.Atoi(n)
	for i := 0; i < size; i++ {
		vars := []string{"RANK=" + strconv.Itoa(i), "WORLD_SIZE=" + n, "LOCAL_RANK=" + str(env["LOCAL_RANK"]),
			"MASTER_ADDR=" + str(env["MASTER_ADDR"]), "MASTER_PORT=" + str(env["MASTER_PORT"])}
		l, err := distributed.Detect(lookup(vars))
		if err != nil || l.Rank != i || l.Size != size {
			t.Errorf("pod %d: %+v %v", i, l, err)
		}
		if _, err := distributed.Endpoint(lookup(vars)); err != nil {
			t.Errorf("pod %d: %v", i, err)
		}
	}
}

// instruction is one Dockerfile instruction.
type instruction struct {
	cmd  string // upper case
	args string
	line int
}

// parseDockerfile joins continuation lines and drops comments (a parser
// directive like "# syntax=" included).
func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(src), "\n") {
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "#") || (trim == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trim, "\\") {
			cur.WriteString(strings.TrimSuffix(trim, "\\") + " ")
			continue
		}
		cur.WriteString(trim)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: a continuation line at the end", path)
	}
	return out
}

// glibc of the images the Dockerfile may name (the distribution's release).
var glibc = map[string]float64{
	"bullseye": 2.31, "bookworm": 2.36, "trixie": 2.41,
	"ubuntu20.04": 2.31, "ubuntu22.04": 2.35, "ubuntu24.04": 2.39,
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "../Dockerfile")
	args := map[string]string{}
	var stages [][]instruction
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			if _, seen := args[k]; !seen || v != "" {
				args[k] = v
			}
		case "FROM":
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
		if !regexp.MustCompile(`^(FROM|ARG|RUN|COPY|WORKDIR|VOLUME|ENV|USER|ENTRYPOINT|CMD|LABEL|EXPOSE)$`).MatchString(in.cmd) {
			t.Errorf("Dockerfile:%d: unknown instruction %s", in.line, in.cmd)
		}
	}
	if len(stages) != 2 {
		t.Fatalf("%d stages, want a builder and a runtime", len(stages))
	}
	expand := func(s string) string {
		return regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(s, func(m string) string { return args[m[2:len(m)-1]] })
	}
	from := func(st []instruction) (image, alias string) {
		f := strings.Fields(st[0].args)
		image = expand(f[0])
		if len(f) == 3 && strings.EqualFold(f[1], "AS") {
			alias = f[2]
		}
		return image, alias
	}
	goImage, buildAlias := from(stages[0])
	runImage, _ := from(stages[1])

	// Builder: a Go image at least as new as go.mod asks for.
	m := regexp.MustCompile(`^golang:(\d+\.\d+)[.\d]*-(\w+)$`).FindStringSubmatch(goImage)
	if m == nil {
		t.Fatalf("builder image %q is not golang:<version>-<debian release>", goImage)
	}
	mod, _ := os.ReadFile("../go.mod")
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if goLine == nil || versionLess(m[1], string(goLine[1])) {
		t.Errorf("builder Go %s is older than go.mod's go %s", m[1], goLine[1])
	}
	// Runtime: NVIDIA's CUDA 12.9 runtime image (the last to run on V100).
	r := regexp.MustCompile(`^nvidia/cuda:(\d+\.\d+)\.\d+-runtime-(ubuntu\d+\.\d+)$`).FindStringSubmatch(runImage)
	if r == nil || r[1] != "12.9" {
		t.Fatalf("runtime image %q: want nvidia/cuda:12.9.x-runtime-ubuntuNN.NN", runImage)
	}
	gb, okB := glibc[m[2]]
	gr, okR := glibc[r[2]]
	if !okB || !okR || gr < gb {
		t.Errorf("glibc: builder %s %v, runtime %s %v: the runtime's must be at least the builder's", m[2], gb, r[2], gr)
	}

	// The builder runs scripts/build-gpu.sh, which must take what it is given.
	var build string
	for _, in := range stages[0] {
		if in.cmd == "RUN" && strings.Contains(in.args, "scripts/build-gpu.sh") {
			build = in.args
		}
	}
	out := regexp.MustCompile(`build-gpu\.sh -o (\S+)`).FindStringSubmatch(build)
	if out == nil {
		t.Fatal("the builder does not run scripts/build-gpu.sh -o OUTPUT")
	}
	script, err := os.ReadFile("../scripts/build-gpu.sh")
	if err != nil || !bytes.Contains(script, []byte("RELLA_KIT")) || !bytes.Contains(script, []byte("-o) out=")) {
		t.Errorf("scripts/build-gpu.sh no longer takes RELLA_KIT and -o: %v", err)
	}

	// Runtime: the binary from the builder on PATH as rella, a non-root
	// user, rella as the entry point, the three volumes, WORKDIR / so that
	// the presets' relative paths land in them.
	var copied, user, workdir string
	var volumes, entry []string
	for _, in := range stages[1] {
		switch in.cmd {
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 3 && f[0] == "--from="+buildAlias && f[1] == out[1] {
				copied = f[2]
			}
		case "USER":
			user = in.args
		case "WORKDIR":
			workdir = in.args
		case "VOLUME":
			volumes = jsonList(t, in)
		case "ENTRYPOINT":
			entry = jsonList(t, in)
		}
	}
	if copied != "/usr/local/bin/rella" {
		t.Errorf("the runtime stage copies %s from stage %s to %q, want /usr/local/bin/rella", out[1], buildAlias, copied)
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") {
		t.Errorf("runtime user %q: want a non-root user", user)
	}
	if !slices.Equal(entry, []string{"rella"}) {
		t.Errorf("ENTRYPOINT %q, want [\"rella\"]", entry)
	}
	for _, v := range []string{"/models", "/data", "/runs"} {
		if !slices.Contains(volumes, v) {
			t.Errorf("no VOLUME %s (have %v)", v, volumes)
		}
	}
	if workdir != "/" {
		t.Errorf("WORKDIR %q: the presets' models/, data/ and runs/ resolve to the volumes only from /", workdir)
	}
	// The Kubernetes pods run as the image's user.
	uid := args["UID"]
	for _, f := range []string{"k8s/score-indexed-job.yaml", "k8s/train-job.yaml", "k8s/merge-job.yaml"} {
		job := one(t, docs(t, f), "Job")
		if got := str(get(job, "spec", "template", "spec", "securityContext", "runAsUser")); got != uid {
			t.Errorf("%s: runAsUser %s, the image's user is %s", f, got, uid)
		}
	}

	// .dockerignore keeps the kit, binaries and runs out of the context but
	// not what the build needs.
	ign, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(ign), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	ignored := func(p string) bool {
		for _, pat := range patterns {
			pat = strings.ReplaceAll(pat, "**/", "")
			for q := p; q != "."; q = filepath.Dir(q) {
				if ok, _ := filepath.Match(pat, q); ok {
					return true
				}
				if ok, _ := filepath.Match(pat, filepath.Base(q)); ok && strings.HasPrefix(pat, "*") {
					return true
				}
			}
		}
		return false
	}
	for _, p := range []string{".kit/include/cuda.h", ".git/HEAD", "bin/rella-gpu", "runs/quickstart/log.jsonl", "cuda/cuda-gpu.test"} {
		if !ignored(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "scripts/build-gpu.sh", "cmd/rella/main.go", "configs/ml1m-zeroshot.yaml", "cuda/kernels/llama.cu", "data/dataset.go"} {
		if ignored(p) {
			t.Errorf(".dockerignore keeps %s, which the build needs, out of the context", p)
		}
	}
}

func jsonList(t *testing.T, in instruction) []string {
	t.Helper()
	var out []string
	if err := yaml.Unmarshal([]byte(in.args), &out); err != nil || !strings.HasPrefix(in.args, "[") {
		t.Errorf("Dockerfile:%d: %s %s: want the JSON list form", in.line, in.cmd, in.args)
	}
	return out
}

func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < 2; i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return false
}
