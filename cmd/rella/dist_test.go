package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// firstLoss reads the loss of step 1 from a training log.
func firstLoss(t *testing.T, path string) float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	var rec struct {
		Step int     `json:"step"`
		Loss float64 `json:"loss"`
	}
	if err := json.Unmarshal(line, &rec); err != nil || rec.Step != 1 {
		t.Fatalf("%s: first record %s: %v", path, line, err)
	}
	return rec.Loss
}

// issue 14: `rella train` as two ranks (torchrun's RANK/WORLD_SIZE and
// MASTER_ADDR/MASTER_PORT, injected) over the TCP group on loopback:
// both finish, rank 0 alone writes the adapter and test results, and the
// step-1 loss (same adapter) is the single process's global-batch loss.
func TestTrainTwoRanksOverTCP(t *testing.T) {
	dir := t.TempDir()
	single := tinyConfig(t, dir, "single", "prepare, train")
	if code, _, stderr, _ := rellaLog(t, "train", single, "retrieval.enabled=false"); code != 0 {
		t.Fatalf("single-process train: exit %d\n%s", code, stderr)
	}
	cfg := tinyConfig(t, dir, "dp", "prepare, train")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no loopback TCP:", err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	var wg sync.WaitGroup
	codes := make([]int, 2)
	outs := make([]string, 2)
	for rank := 0; rank < 2; rank++ {
		vars := map[string]string{"RANK": strconv.Itoa(rank), "WORLD_SIZE": "2", "LOCAL_RANK": strconv.Itoa(rank),
			"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RELLA_RENDEZVOUS_TIMEOUT": "60s"}
		wg.Add(1)
		go func(rank int) {
			defer wg.Done()
			var out, errb syncBuffer
			e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, log: slog.New(slog.NewTextHandler(&errb, nil)),
				lookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
			codes[rank] = runMain(context.Background(), e, []string{"train", cfg, "retrieval.enabled=false"})
			outs[rank] = errb.String()
		}(rank)
	}
	wg.Wait()
	for r, c := range codes {
		if c != 0 {
			t.Fatalf("rank %d: exit %d\n%s", r, c, outs[r])
		}
	}
	if !strings.Contains(outs[1], "rank 0 writes the adapter") {
		t.Errorf("rank 1 did not leave the writing to rank 0:\n%s", outs[1])
	}
	for _, p := range []string{"adapter/adapter_model.safetensors", "train/final", "train/log.jsonl", "train/test-recency/metrics.json"} {
		if _, err := os.Stat(filepath.Join(dir, "dp", p)); err != nil {
			t.Errorf("rank 0 did not write %s: %v", p, err)
		}
	}
	a, b := firstLoss(t, filepath.Join(dir, "single", "train", "log.jsonl")), firstLoss(t, filepath.Join(dir, "dp", "train", "log.jsonl"))
	if math.Abs(a-b) > 1e-12*math.Abs(a) {
		t.Errorf("step-1 loss: 2 ranks %v, single process %v", b, a)
	}
}
