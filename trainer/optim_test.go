package trainer

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/rella-project/rella/engine"
)

// TestAdamWAgainstPython compares four AdamW steps with values computed by a
// straightforward float64 Python implementation of Loshchilov & Hutter's
// AdamW in torch's conventions (decay p -= lr*wd*p, then the bias-corrected
// Adam step with eps added to sqrt(v_hat)):
//
//	p=[0.5,-1.25,2.0,0.0]; b1,b2,eps,wd=0.9,0.999,1e-8,0.1
//	for t,(g,lr) in enumerate(zip(grads,lrs),1):
//	  p-=lr*wd*p; m=b1*m+(1-b1)*g; v=b2*v+(1-b2)*g*g
//	  p-=lr*(m/(1-b1**t))/(sqrt(v/(1-b2**t))+eps)
func TestAdamWAgainstPython(t *testing.T) {
	p := &engine.Param{Name: "p", Shape: []int{4}, Value: []float32{0.5, -1.25, 2.0, 0.0}, Grad: make([]float32, 4)}
	grads := [][]float32{{0.1, -0.2, 0.3, 0.0}, {-0.05, 0.4, 0.3, 1e-3}, {0.2, 0.2, -0.6, -2.0}, {0, 0, 0, 0}}
	lrs := []float64{1e-2, 5e-3, 2e-3, 1e-3}
	want := [][]float64{
		{0.4895000009999999, -1.2387500005, 1.9880000003333334, 0.0},
		{0.4879235659696695, -1.2399611430770519, 1.9820060004998334, -0.003720631513315506},
		{0.4865097581554354, -1.240751632444149, 1.9817608979576817, -0.0024428352909812074},
		{0.4859220222485889, -1.241052887745359, 1.9816246891948368, -0.001919549322719408},
	}
	wantM := []float64{0.02124, 0.03581999999999999, -0.00783, -0.17991899999999997}
	wantV := []float64{5.242503249000006e-05, 0.00023952027996000026, 0.0005391903599100005, 0.0039960009980010034}
	a := NewAdamW([]*engine.Param{p}, 0.9, 0.999, 1e-8, 0.1)
	for s := range grads {
		copy(p.Grad, grads[s])
		a.Step([]*engine.Param{p}, lrs[s])
		for i, w := range want[s] {
			// float32 storage of p, m and v between steps: relative error a
			// few float32 ulps (1e-6), absolute floor for values near 0.
			if got := float64(p.Value[i]); math.Abs(got-w) > 1e-6*math.Abs(w)+1e-9 {
				t.Errorf("step %d: p[%d] = %.10g, want %.10g", s+1, i, got, w)
			}
		}
	}
	for i := range wantM {
		if math.Abs(float64(a.M[0][i])-wantM[i]) > 1e-6*math.Abs(wantM[i]) {
			t.Errorf("m[%d] = %v, want %v", i, a.M[0][i], wantM[i])
		}
		if math.Abs(float64(a.V[0][i])-wantV[i]) > 1e-6*math.Abs(wantV[i]) {
			t.Errorf("v[%d] = %v, want %v", i, a.V[0][i], wantV[i])
		}
	}
	if a.T != 4 {
		t.Errorf("T = %d, want 4", a.T)
	}
}

func TestClipping(t *testing.T) {
	ps := []*engine.Param{{Grad: []float32{3, 0}}, {Grad: []float32{0, -4}}}
	n := gradNorm(ps)
	if n != 5 {
		t.Fatalf("norm %v, want 5", n)
	}
	// torch.nn.utils.clip_grad_norm_: coef = max/(norm+1e-6), only when < 1.
	if c := clipCoef(n, 1); math.Abs(c-1/(5+1e-6)) > 1e-15 {
		t.Errorf("clipCoef(5, 1) = %v", c)
	}
	if c := clipCoef(n, 10); c != 1 {
		t.Errorf("clipCoef(5, 10) = %v, want 1 (no clipping below the limit)", c)
	}
	if c := clipCoef(n, 0); c != 1 {
		t.Errorf("clipCoef(5, 0) = %v, want 1 (0 = off)", c)
	}
	scaleGrads(ps, clipCoef(n, 1))
	if got := gradNorm(ps); math.Abs(got-1) > 1e-6 {
		t.Errorf("norm after clipping %v, want 1", got)
	}
}

func TestLRSchedule(t *testing.T) {
	// HF get_linear_schedule_with_warmup(total=10, warmup=2), base 1e-3:
	// lambda(s) = s/2 for s < 2, else (10-s)/8.
	want := []float64{0, 0.5e-3, 1e-3, 7.0 / 8 * 1e-3, 6.0 / 8 * 1e-3, 5.0 / 8 * 1e-3, 4.0 / 8 * 1e-3, 3.0 / 8 * 1e-3, 2.0 / 8 * 1e-3, 1.0 / 8 * 1e-3}
	for s, w := range want {
		if got := LR("linear", 1e-3, s, 10, 2); math.Abs(got-w) > 1e-18 {
			t.Errorf("linear warmup 2: LR(step %d) = %v, want %v", s, got, w)
		}
	}
	// No warm-up (the authors'): first step at the base rate, last at base/total.
	if got := LR("linear", 1e-3, 0, 5, 0); got != 1e-3 {
		t.Errorf("linear: first step %v, want 1e-3", got)
	}
	if got := LR("linear", 1e-3, 4, 5, 0); math.Abs(got-2e-4) > 1e-18 {
		t.Errorf("linear: last step %v, want 2e-4", got)
	}
	for s, w := range []float64{0, 0.5e-3, 1e-3, 1e-3, 1e-3} {
		if got := LR("constant", 1e-3, s, 5, 2); got != w {
			t.Errorf("constant warmup 2: LR(step %d) = %v, want %v", s, got, w)
		}
	}
}

// hfCosineLambda is HF transformers' _get_cosine_schedule_with_warmup_lr_lambda,
// transcribed here from its definition (num_cycles is 0.5 by default):
//
//	if current_step < num_warmup_steps:
//	    return float(current_step) / float(max(1, num_warmup_steps))
//	progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
//	return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
func hfCosineLambda(current, warmup, total int, cycles float64) float64 {
	if current < warmup {
		return float64(current) / float64(max(1, warmup))
	}
	progress := float64(current-warmup) / float64(max(1, total-warmup))
	return math.Max(0, 0.5*(1+math.Cos(math.Pi*cycles*2*progress)))
}

// TestCosineSchedule: "cosine" is HF's get_cosine_schedule_with_warmup
// (0.5 cycles): hand-checked values, then every step of several runs
// against the transcribed lambda.
func TestCosineSchedule(t *testing.T) {
	// total 10, warm-up 2, base 1e-3: progress p = (s-2)/8 after warm-up;
	// 0.5*(1+cos(pi/4)) = 0.8535533905932737, 0.5*(1+cos(3pi/4)) = 0.1464466094067262.
	hand := map[int]float64{0: 0, 1: 0.5e-3, 2: 1e-3, 4: 0.8535533905932737e-3, 6: 0.5e-3, 8: 0.1464466094067262e-3, 10: 0}
	for s, w := range hand {
		if got := LR("cosine", 1e-3, s, 10, 2); math.Abs(got-w) > 1e-15 {
			t.Errorf("cosine warmup 2: LR(step %d) = %v, want %v", s, got, w)
		}
	}
	for _, c := range []struct{ total, warmup int }{{10, 2}, {9, 0}, {600, 18}, {5, 5}, {3, 7}} {
		for s := 0; s <= c.total; s++ {
			want := 4e-2 * hfCosineLambda(s, c.warmup, c.total, 0.5)
			if got := LR("cosine", 4e-2, s, c.total, c.warmup); math.Abs(got-want) > 1e-16 {
				t.Errorf("total %d warmup %d step %d: %v, want %v", c.total, c.warmup, s, got, want)
			}
		}
	}
	// Symmetric around the midpoint: lambda(mid+d) = 1 - lambda(mid-d).
	if a, b := LR("cosine", 1, 3, 10, 2), LR("cosine", 1, 9, 10, 2); math.Abs(a+b-1) > 1e-15 {
		t.Errorf("cosine not symmetric: %v + %v != 1", a, b)
	}
}

// TestWarmupRatio: warmup_steps wins when > 0, else ceil(ratio * total) as
// HF's get_warmup_steps, including its float rounding: in Python
// math.ceil(100 * 0.07) is 8 (100*0.07 = 7.000000000000001) and
// math.ceil(100 * 0.29) is 29 (28.999999999999996).
func TestWarmupRatio(t *testing.T) {
	cases := []struct {
		steps int
		ratio float64
		total int
		want  int
	}{
		{0, 0, 100, 0}, {0, 0.1, 100, 10}, {0, 0.25, 10, 3}, {0, 0.1, 9, 1}, {0, 0.1, 30, 3}, {0, 0.07, 100, 8}, {0, 0.29, 100, 29},
		{0, 0.03, 600, 18}, {5, 0.5, 100, 5}, {0, 1, 7, 7},
	}
	for _, c := range cases {
		o := DefaultOptions()
		o.WarmupSteps, o.WarmupRatio, o.MaxSteps = c.steps, c.ratio, c.total
		if got := o.Warmup(c.total); got != c.want {
			t.Errorf("warmup_steps %d warmup_ratio %v total %d: %d, want %d", c.steps, c.ratio, c.total, got, c.want)
		}
		p, err := o.Plan(1000)
		if err != nil || p.Warmup != c.want {
			t.Errorf("Plan.Warmup %d (%v), want %d", p.Warmup, err, c.want)
		}
	}
}

func TestPlanStepCount(t *testing.T) {
	o := DefaultOptions()
	cases := []struct {
		n, batch, micro, gas, epochs, maxSteps int
		want                                   Plan
	}{
		// The authors' formula max(floor(n/batch)*epochs, epochs).
		{1000, 256, 8, 0, 5, 0, Plan{N: 1000, Batch: 256, MicroBatch: 8, Accum: 32, StepsPerEpoch: 3, TotalSteps: 15, Epochs: 5, DroppedPerEpoch: 232}},
		// 2N < 256: the batch is the whole training set, one step per epoch.
		{128, 256, 8, 0, 5, 0, Plan{N: 128, Batch: 128, MicroBatch: 8, Accum: 16, StepsPerEpoch: 1, TotalSteps: 5, Epochs: 5}},
		// Batch not a multiple of the micro-batch: last micro-batch smaller.
		{100, 256, 8, 0, 10, 0, Plan{N: 100, Batch: 100, MicroBatch: 8, Accum: 13, StepsPerEpoch: 1, TotalSteps: 10, Epochs: 10}},
		// max_steps wins and runs into further epochs.
		{37, 10, 3, 0, 3, 7, Plan{N: 37, Batch: 10, MicroBatch: 3, Accum: 4, StepsPerEpoch: 3, TotalSteps: 7, Epochs: 3, DroppedPerEpoch: 7}},
		// gradient_accumulation_steps sets the batch.
		{50, 256, 4, 3, 2, 0, Plan{N: 50, Batch: 12, MicroBatch: 4, Accum: 3, StepsPerEpoch: 4, TotalSteps: 8, Epochs: 2, DroppedPerEpoch: 2}},
		// Tiny set: micro-batch capped by the batch.
		{5, 256, 8, 0, 3, 0, Plan{N: 5, Batch: 5, MicroBatch: 5, Accum: 1, StepsPerEpoch: 1, TotalSteps: 3, Epochs: 3}},
	}
	for _, c := range cases {
		o.BatchSize, o.MicroBatchSize, o.GradientAccumulationSteps, o.NumEpochs, o.MaxSteps = c.batch, c.micro, c.gas, c.epochs, c.maxSteps
		got, err := o.Plan(c.n)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("Plan(%d) with %+v:\n got %+v\nwant %+v", c.n, c, got, c.want)
		}
		// Every step's micro-batches tile exactly its Batch positions.
		for s := 0; s < got.TotalSteps; s++ {
			prevHi := -1
			for k := 0; k < got.Accum; k++ {
				e, lo, hi := got.window(s, k)
				if e != s/got.StepsPerEpoch || hi <= lo || hi > got.N || (prevHi >= 0 && lo != prevHi) {
					t.Fatalf("%+v: window(%d,%d) = %d,%d,%d", c, s, k, e, lo, hi)
				}
				prevHi = hi
			}
			_, first, _ := got.window(s, 0)
			if prevHi-first != got.Batch {
				t.Fatalf("%+v: step %d covers %d examples, want %d", c, s, prevHi-first, got.Batch)
			}
		}
	}
	if _, err := o.Plan(0); err == nil {
		t.Error("Plan(0): no error")
	}
}

func TestEpochOrder(t *testing.T) {
	a := EpochOrder(42, 0, 100)
	if !isPerm(a) {
		t.Fatalf("not a permutation: %v", a)
	}
	if !slices.Equal(a, EpochOrder(42, 0, 100)) {
		t.Error("same (seed, epoch) gives different orders")
	}
	if slices.Equal(a, EpochOrder(42, 1, 100)) || slices.Equal(a, EpochOrder(43, 0, 100)) {
		t.Error("epoch or seed change leaves the order unchanged")
	}
	// Uniform over the 24 permutations of 4: 24000 draws, ~1000 each
	// (sd ~31); a 5-sd band.
	counts := map[string]int{}
	for seed := uint64(0); seed < 2400; seed++ {
		for e := 0; e < 10; e++ {
			counts[fmt.Sprint(EpochOrder(seed, e, 4))]++
		}
	}
	if len(counts) != 24 {
		t.Fatalf("%d distinct permutations, want 24", len(counts))
	}
	for k, c := range counts {
		if c < 845 || c > 1155 {
			t.Errorf("permutation %s drawn %d times, want ~1000", k, c)
		}
	}
}

func TestDropoutSeedsDistinct(t *testing.T) {
	seen := map[uint64]string{}
	for _, seed := range []uint64{0, 1, 42} {
		for s := 0; s < 200; s++ {
			for k := 0; k < 40; k++ {
				d := DropoutSeed(seed, s, k)
				id := fmt.Sprint(seed, s, k)
				if prev, ok := seen[d]; ok {
					t.Fatalf("DropoutSeed collision: %s and %s", prev, id)
				}
				seen[d] = id
			}
		}
	}
}

func isPerm(a []int) bool {
	seen := make([]bool, len(a))
	for _, v := range a {
		if v < 0 || v >= len(a) || seen[v] {
			return false
		}
		seen[v] = true
	}
	return true
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.LRScheduler = "cosine_with_restarts"
	if err := o.Validate(); err == nil || err.Error() != `training.lr_scheduler: "cosine_with_restarts" is not one of linear, cosine, constant` {
		t.Errorf("got %v", err)
	}
	o = DefaultOptions()
	o.LRScheduler = "cosine"
	if err := o.Validate(); err != nil {
		t.Errorf("cosine: %v", err)
	}
	for _, r := range []float64{-0.1, 1.5, math.NaN()} {
		o := DefaultOptions()
		o.WarmupRatio = r
		if err := o.Validate(); err == nil || !strings.HasPrefix(err.Error(), "training.warmup_ratio: must be in [0, 1]") {
			t.Errorf("warmup_ratio %v: %v", r, err)
		}
	}
	o = DefaultOptions()
	o.MicroBatchSize = 0
	if err := o.Validate(); err == nil || err.Error() != "training.micro_batch_size: must be at least 1, got 0" {
		t.Errorf("got %v", err)
	}
}
