//go:build rellagpu

package cuda

import (
	"context"
	"testing"
	"time"
)

// TestTrainKernelsOnDevice runs every training kernel on GPU 0 against the
// CPU references of train_ref.go, with fresh random inputs each run.
func TestTrainKernelsOnDevice(t *testing.T) {
	dev, err := OpenDevice(0, nil)
	if err != nil {
		skipOrFail(t, err)
	}
	defer dev.Close()
	seed := uint64(time.Now().UnixNano())
	t.Logf("%s sm_%d%d, seed %d", dev.Name, dev.Major, dev.Minor, seed)
	results, err := CheckTrainKernels(context.Background(), dev, seed)
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%v %s: %v", r.Elem, r.Name, r.Err)
		} else {
			t.Logf("ok %v %s relerr %.2e", r.Elem, r.Name, r.RelErr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(results) == 0 {
		t.Fatal("no training kernel checks ran")
	}
}

// TestTrainLaunchArgumentsMatchKernels calls every training launcher with
// empty shapes (a zero grid: nothing reaches the driver, no GPU needed):
// each must pass arguments of the number and kinds its kernel declares.
func TestTrainLaunchArgumentsMatchKernels(t *testing.T) {
	params, err := kernelParams(kernelSource)
	if err != nil {
		t.Fatal(err)
	}
	m := &Module{fns: map[string]*kernel{}}
	for _, name := range KernelNames {
		m.fns[name] = &kernel{name: name, params: params[name]}
	}
	o := ops{d: &Device{}, m: m}
	var b Buffer
	calls := map[string]error{
		kCastElem:        o.castElem(b, b, 0),
		kRMSNormBwd:      o.rmsnormBwd(b, b, b, b, 0, 8, 1e-5),
		kRoPEBwd:         o.ropeBwd(b, b, 0, 2, 8, 1e4),
		kAttentionFwd:    o.attentionFwd(b, b, b, b, b, b, 1, 0, 4, 2, 8),
		kAttentionBwdPre: o.attentionBwdPre(b, b, b, 0, 4, 8),
		kAttentionBwdDQ:  o.attentionBwdDQ(b, b, b, b, b, b, b, b, 1, 0, 4, 2, 8),
		kAttentionBwdDKV: o.attentionBwdDKV(b, b, b, b, b, b, b, b, b, 1, 0, 4, 2, 8),
		kSwiGLUBwd:       o.swigluBwd(b, b, b, b, b, 0),
		kDropoutMask:     o.dropoutMask(b, 1, 2, 0, 0, 0.1),
		kDropoutApply:    o.dropoutApply(b, b, b, 0, 0.1),
		kMaskMulAdd:      o.maskMulAdd(b, b, b, 0, 0.1),
		kGatherRows:      o.gatherRows(b, b, b, 0, 8),
		kScatterAddRows:  o.scatterAddRows(b, b, b, 0, 8),
		kCEStats:         o.ceStats(b, b, b, b, b, 0, 16, 0),
		kCEFinish:        o.ceFinish(b, b, b, b, b, 0),
		kCEGrad:          o.ceGrad(b, b, b, b, 0, 16, 0, 1),
		kAdamW:           o.adamw(b, b, b, b, 0, 0.9, 0.999, 1e-8, 1, 1e-3, 0.5),
		kScaleF32:        o.scaleF32(b, 0, 0.5),
	}
	for name, err := range calls {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// sumsq_partial and sum_partials have fixed grids: check their argument
	// lists directly.
	for name, args := range map[string][]any{
		kSumSqPartial: {b, b, int64(0)},
		kSumPartials:  {b, b, sumSqBlocks},
	} {
		if err := o.d.launch(m.fn(name), dim3{}, dim3{}, 0, args...); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range trainKernelNames {
		if _, ok := calls[name]; !ok && name != kSumSqPartial && name != kSumPartials {
			t.Errorf("training kernel %s has no launcher call in this test", name)
		}
	}
	// A wrong call is caught: adamw with a float32 for a float64 passed as bits.
	if err := o.d.launch(m.fn(kAdamW), dim3{}, dim3{}, 0, b, b, b, b, int64(0), float32(0.9), int64(0), int64(0), int64(0), int64(0), int64(0)); err == nil {
		t.Errorf("adamw with a float for its long long beta1 was accepted")
	}
	if err := o.dropoutMask(b, 1, 2, 0, 0, 1); err == nil {
		t.Errorf("dropout probability 1 was accepted")
	}
}
