package pipeline

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/rella-project/rella/metrics"
)

// Each variant has its own folder: split, history and adapter all show in
// the name, so no result overwrites another's.
func TestVariantDirs(t *testing.T) {
	seen := map[string]Variant{}
	for _, v := range []Variant{
		{Stage: "score", Split: "test", History: HistoryRecency},
		{Stage: "score", Split: "test", History: HistorySUBR},
		{Stage: "score", Split: "valid", History: HistoryRecency},
		{Stage: "score", Split: "test", History: HistoryRecency, Adapter: "runs/a/adapter"},
		{Stage: "score", Split: "test", History: HistoryRecency, Adapter: "runs/b/adapter"},
		{Stage: "score", Split: "test", History: HistorySUBR, Adapter: "/x/my run/final"},
	} {
		d := v.Dir()
		if o, dup := seen[d]; dup {
			t.Errorf("%+v and %+v share the folder %q", o, v, d)
		}
		seen[d] = v
		if strings.ContainsAny(d, "/ ") {
			t.Errorf("folder name %q has a separator or space", d)
		}
	}
	if d := (Variant{Split: "test", History: HistorySUBR, Adapter: "/x/my run/final"}).Dir(); d != "test-subr-my_run-final" {
		t.Errorf("adapter folder: %q", d)
	}
	if n := (Variant{Split: "test", History: HistorySUBR, Adapter: "o/adapter", FineTuned: true}).Name(); n != "fine-tuned (LoRA, SUBR)" {
		t.Errorf("fine-tuned name %q", n)
	}
	if n := (Variant{Split: "test", History: HistoryRecency, Adapter: "runs/a/adapter"}).Name(); !strings.HasPrefix(n, "adapter a-adapter") {
		t.Errorf("adapter row name %q must not read as zero-shot", n)
	}
}

// metrics.json: metrics at the top level (null when undefined), then the
// provenance; it reads back.
func TestRecordJSON(t *testing.T) {
	rec := Record{Result: metrics.Result{AUC: math.NaN(), LogLoss: 0.5, Accuracy: 1, N: 3}, Variant: "v", Split: "test", K: 5,
		Fingerprint: "f", Inputs: map[string]string{"a": "b"}}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `{"auc":null,"logloss":0.5,"acc":1,"n":3,"variant":"v"`) {
		t.Errorf("metrics.json: %s", b)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(back.Result.AUC) || back.Result.N != 3 || back.K != 5 || back.Inputs["a"] != "b" || back.Fingerprint != "f" {
		t.Errorf("read back %+v", back)
	}
	if hashInputs(map[string]string{"a": "bc"}) == hashInputs(map[string]string{"ab": "c"}) {
		t.Error("fingerprints of different inputs collide")
	}
	if d := diffInputs(map[string]string{"k": "3", "x": "1"}, map[string]string{"k": "2", "x": "1", "y": "0"}); strings.Join(d, ",") != "k,y" {
		t.Errorf("diff %v", d)
	}
}
