package kernelexec

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rella-project/rella/cuda"
)

// A mutation is a bug planted in one kernel of the source: the first
// occurrence of old after the kernel's declaration becomes new.
type mutation struct {
	name     string
	kernel   string // the function whose body is changed
	old, new string
	more     [][2]string // further edits after the first, in the same function
	elem     cuda.Elem
	groups   []string // the suite's case groups that exercise the kernel
	ci       bool     // run by default (the rest with RELLA_MUTATIONS=all)
}

var mutations = []mutation{
	{name: "attention: barrier after the K/V tile load removed", kernel: "attention",
		old: "\t\t__syncthreads();\n\t\tif (!active || j0 > t) continue;", new: "\t\tif (!active || j0 > t) continue;",
		groups: []string{"attention"}, ci: true},
	{name: "attention: barrier before the K/V tile load removed (write-after-read)", kernel: "attention",
		old: "\t\t__syncthreads();\n\t\tfor (int e = threadIdx.x;", new: "\t\tfor (int e = threadIdx.x;",
		groups: []string{"attention"}, ci: true},
	{name: "attention: causal bound off by one (key t+1 visible)", kernel: "attention",
		old: "if (j <= t) {\n\t\t\ts = 0.f;", new: "if (j <= t + 1) {\n\t\t\ts = 0.f;",
		more:   [][2]string{{"float p = (j <= t) ?", "float p = (j <= t + 1) ?"}, {"int nk = min(ATT_KT, t - j0 + 1);", "int nk = min(ATT_KT, t - j0 + 2);"}},
		groups: []string{"attention"}, ci: true},
	{name: "attention: online-softmax rescale of the accumulator missing", kernel: "attention",
		old: "acc[i] *= corr;", new: "acc[i] *= 1.f;",
		groups: []string{"attention"}, ci: true},
	{name: "attention: wrong shared-memory row (another warp's query)", kernel: "attention",
		old: "s += qs[warp][c] * ks[lane][c];", new: "s += qs[(warp + 1) % ATT_QT][c] * ks[lane][c];",
		groups: []string{"attention"}},
	{name: "attention_fwd: lse without the running max", kernel: "attention_fwd",
		old: "lse[(long long)(start + t) * H + h] = m + logf(l);", new: "lse[(long long)(start + t) * H + h] = logf(l);",
		groups: []string{"attention_train"}},
	{name: "attention_bwd_dq: diagonal key dropped", kernel: "attention_bwd_dq",
		old: "if (j <= t) {", new: "if (j < t) {",
		groups: []string{"attention_train"}},
	{name: "attention_bwd_dkv: barrier before the query tile load removed (write-after-read)", kernel: "attention_bwd_dkv",
		old: "\t\t\t__syncthreads();  // the previous tile is no longer read\n", new: "",
		groups: []string{"attention_train"}},
	{name: "attention_bwd_dkv: GQA loop over one query head only", kernel: "attention_bwd_dkv",
		old: "for (int hh = 0; hh < group; hh++) {", new: "for (int hh = 0; hh < 1; hh++) {",
		groups: []string{"attention_train"}},
	{name: "rmsnorm: barrier between the warp partials and their sum removed", kernel: "rmsnorm",
		old: "\tif (lane == 0) part[wid] = s;\n\t__syncthreads();\n", new: "\tif (lane == 0) part[wid] = s;\n",
		groups: []string{"rmsnorm"}},
	{name: "block_sum: barrier protecting a reused partials array removed (write-after-read)", kernel: "block_sum",
		old: "\t__syncthreads();  // a previous call may still be reading part\n", new: "",
		groups: []string{"rmsnorm_bwd", "cross_entropy"}, ci: true},
	{name: "ce_stats: running sum not rescaled to the new max", kernel: "ce_stats",
		old: "s[r] = s0 * expf(m0 - mn) + sum * expf(mx - mn);", new: "s[r] = s0 + sum * expf(mx - mn);",
		groups: []string{"cross_entropy"}},
	{name: "rope: rotation sign of the second half", kernel: "rope",
		old: "p[k + half] = st(x2 * cs + x1 * sn);", new: "p[k + half] = st(x2 * cs - x1 * sn);",
		groups: []string{"rope"}},
	{name: "dropout_mask: jump-ahead one draw late", kernel: "dropout_mask",
		old: "pcg_advance(s, (unsigned long long)(first + e0));", new: "pcg_advance(s, (unsigned long long)(first + e0 + 1));",
		groups: []string{"dropout"}},
	{name: "adamw: weight decay applied in float", kernel: "adamw",
		old: "double w = __dmul_rn((double)p[i], bits_double(decay));", new: "double w = (double)(p[i] * (float)bits_double(decay));",
		groups: []string{"optimiser"}},
	{name: "fp16 st: ties rounded up instead of to even", kernel: "st", elem: cuda.F16,
		old: "if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) != 0u)) r++;", new: "if (rem >= 0x1000u) r++;",
		groups: []string{"conversions"}},
}

// mutate applies m to src.
func mutate(src string, m mutation) (string, error) {
	decl := regexp.MustCompile(`\b` + regexp.QuoteMeta(m.kernel) + `\(`)
	loc := decl.FindStringIndex(src)
	if loc == nil {
		return "", fmt.Errorf("no function %s in the source", m.kernel)
	}
	i := strings.Index(src[loc[0]:], m.old)
	if i < 0 {
		return "", fmt.Errorf("%q not found after %s", m.old, m.kernel)
	}
	i += loc[0]
	src = src[:i] + m.new + src[i+len(m.old):]
	for _, e := range m.more {
		j := strings.Index(src[i:], e[0])
		if j < 0 {
			return "", fmt.Errorf("%q not found after %s", e[0], m.kernel)
		}
		j += i
		src = src[:j] + e[1] + src[j+len(e[0]):]
	}
	return src, nil
}

// TestMutationsCaught plants each bug of mutations in the kernel source and
// requires the CPU execution to fail on it (a wrong value, a fault); it logs
// which schedule caught each. By default it runs the mutations marked ci;
// RELLA_MUTATIONS=all runs all of them, and -short only the first two.
func TestMutationsCaught(t *testing.T) {
	all := os.Getenv("RELLA_MUTATIONS") == "all"
	seed := testSeed(t)
	n := 0
	for _, m := range mutations {
		if !all && !m.ci {
			continue
		}
		if testing.Short() && n >= 2 {
			break
		}
		n++
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			src, err := mutate(cuda.KernelSource(), m)
			if err != nil {
				t.Fatalf("the mutation no longer applies (update it with the source): %v", err)
			}
			h := build(t, src, m.elem)
			caught := map[Schedule]string{}
			for _, sched := range []Schedule{InOrder, Skewed} {
				s := newSuite(context.Background(), h, sched, seed)
				s.only = map[string]bool{}
				for _, g := range m.groups {
					s.only[g] = true
				}
				s.all()
				if s.cases != len(m.groups) {
					t.Fatalf("ran %d case groups, want %v", s.cases, m.groups)
				}
				if len(s.fails) > 0 {
					caught[sched] = s.fails[0]
				}
			}
			if len(caught) == 0 {
				t.Errorf("not caught by either schedule")
				return
			}
			for _, sched := range []Schedule{InOrder, Skewed} {
				if f, ok := caught[sched]; ok {
					t.Logf("caught (%v): %.300s", sched, f)
				} else {
					t.Logf("missed by the %v schedule", sched)
				}
			}
		})
	}
}
