//go:build rellagpu

package cuda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/rella-project/rella/model"
)

// H200DenseBF16 is the measured dense bf16 throughput of an H200 in FLOP/s
// (GPU.md), the denominator of the reported MFU.
const H200DenseBF16 = 790e12

// SelfTest checks the GPU path on this machine and writes a report to w:
// the driver, NVRTC and cuBLAS found, every kernel against its CPU reference
// (CheckKernels), optionally the engine end to end on a small checkpoint
// (opts.ModelDir) and the scoring speed on a benchmark checkpoint
// (opts.BenchDir). Lines start with PASS, FAIL, INFO or BENCH. It returns an
// error when a check fails.
func SelfTest(ctx context.Context, opts SelfTestOptions, w io.Writer, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	seed := opts.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	fmt.Fprintf(w, "INFO seed %d\n", seed)
	dv, err := DriverVersion()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "INFO driver supports CUDA %d.%d\n", dv/1000, dv%1000/10)
	maj, min, path, err := NVRTCVersion()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "INFO nvrtc %d.%d (%s)\n", maj, min, path)
	dev, err := OpenDevice(opts.Device, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "INFO device %d: %s, sm_%d%d, %d SMs, %.1f GiB\n", dev.Index, dev.Name, dev.Major, dev.Minor, dev.SMs, gib(dev.TotalMem))
	if archs, err := NVRTCArchs(); err == nil {
		target, err := chooseKernelTarget(dev.Major*10+dev.Minor, archs, fmt.Sprintf("%d.%d", maj, min))
		if err != nil {
			fmt.Fprintf(w, "INFO kernels: %v\n", err)
		} else {
			fmt.Fprintf(w, "INFO kernels: %s\n", target.Why)
		}
	}
	var blasInfo string
	dev.Do(func() error {
		b, err := dev.NewBLAS()
		if err != nil {
			blasInfo = err.Error()
			return nil
		}
		blasInfo = fmt.Sprintf("cublas %d (%s)", b.Version, b.Path)
		return b.Destroy()
	})
	fmt.Fprintf(w, "INFO %s\n", blasInfo)
	start := time.Now()
	results, err := CheckKernels(ctx, dev, seed)
	dev.Close()
	failed := 0
	for _, r := range results {
		status := "PASS"
		if r.Err != nil {
			status = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "%s kernel %-5v %-60s relerr %.2e", status, r.Elem, r.Name, r.RelErr)
		if r.Err != nil {
			fmt.Fprintf(w, "  %v", r.Err)
		}
		fmt.Fprintln(w)
	}
	if err != nil {
		return fmt.Errorf("kernel checks stopped: %w", err)
	}
	fmt.Fprintf(w, "INFO %d kernel checks in %v\n", len(results), time.Since(start).Round(time.Millisecond))
	if opts.ModelDir != "" {
		n, err := checkModel(ctx, opts, seed, w, log)
		if err != nil {
			return err
		}
		failed += n
	}
	if opts.BenchDir != "" {
		n, err := bench(ctx, opts, w, log)
		if err != nil {
			return err
		}
		failed += n
	}
	if failed > 0 {
		return fmt.Errorf("cuda: %d GPU checks failed", failed)
	}
	return nil
}

// checkModel runs the engine on a small checkpoint in f32 and in a half
// type (SelfTestOptions.Precision when it is f16 or bf16, else the
// device's natural one) and compares with ForwardRef (and with
// reference.json, llama2.c's logits, when it is there). It returns the number of failures.
func checkModel(ctx context.Context, opts SelfTestOptions, seed uint64, w io.Writer, log *slog.Logger) (int, error) {
	m, err := model.Load(opts.ModelDir)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	var ref struct {
		Sequences []struct {
			Name       string    `json:"name"`
			Tokens     []int     `json:"tokens"`
			LogitsLast []float32 `json:"logits_last"`
		} `json:"sequences"`
	}
	var seqs [][]int
	if b, err := os.ReadFile(filepath.Join(opts.ModelDir, "reference.json")); err == nil {
		if err := json.Unmarshal(b, &ref); err != nil {
			return 0, fmt.Errorf("%s: %w", filepath.Join(opts.ModelDir, "reference.json"), err)
		}
		for _, s := range ref.Sequences {
			seqs = append(seqs, s.Tokens)
		}
	}
	// Plus random sequences, packed with the others.
	r := newRand(seed)
	for _, l := range []int{2, 37, 129} {
		s := make([]int, l)
		for i := range s {
			s[i] = r.IntN(m.Config.VocabSize)
		}
		seqs = append(seqs, s)
	}
	rows := []int{m.Config.VocabSize - 1, 0, 3 % m.Config.VocabSize}
	failed := 0
	report := func(what string, err error, rel float64) {
		status := "PASS"
		if err != nil {
			status = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "%s engine %-60s relerr %.2e", status, what, rel)
		if err != nil {
			fmt.Fprintf(w, "  %v", err)
		}
		fmt.Fprintln(w)
	}
	// "f32", then the half type asked for (--precision f16 or bf16), else
	// "" for the device's natural half type.
	halfPrec := ""
	if e, ok, _ := ParsePrecision(opts.Precision); ok && e != F32 {
		halfPrec = opts.Precision
	}
	for _, prec := range []string{"f32", halfPrec} {
		en, err := NewEngineWith(m, Options{Device: opts.Device, Precision: prec, MaxTokens: 600}, log)
		if err != nil {
			return failed, err
		}
		e := en.Elem()
		// float32 through a few layers against float64: 1e-4. Half
		// activations rounded after every op of every layer: 5e-2 relative,
		// with an absolute floor of a tenth of the output's RMS for the
		// elements near zero (set per output in tol).
		half := e != F32
		lastRef, meanRef, err := ForwardRef(m.Config, m.Tensor, e, seqs)
		if err != nil {
			en.Close()
			return failed, err
		}
		full, err1 := en.LastLogits(ctx, seqs, nil)
		sel, err2 := en.LastLogits(ctx, seqs, rows)
		mean, err3 := en.MeanHidden(ctx, seqs)
		en.Close()
		if err := errors.Join(err1, err2, err3); err != nil {
			return failed, err
		}
		tol := func(want []float32) (atol, rtol float64) {
			if !half {
				return 1e-4, 1e-4
			}
			return 0.1 * rms(want), 5e-2
		}
		for i := range seqs {
			name := fmt.Sprintf("%v seq %d (len %d)", e, i, len(seqs[i]))
			atol, rtol := tol(lastRef[i])
			report(name+" last logits vs ForwardRef", compareTol(full[i], lastRef[i], atol, rtol), RelErr(full[i], lastRef[i]))
			matol, mrtol := tol(meanRef[i])
			report(name+" mean hidden vs ForwardRef", compareTol(mean[i], meanRef[i], matol, mrtol), RelErr(mean[i], meanRef[i]))
			want := make([]float32, len(rows))
			for j, row := range rows {
				want[j] = full[i][row]
			}
			report(name+" logits of rows vs full", Compare("rows", sel[i], want, atol, rtol), RelErr(sel[i], want))
			if i < len(ref.Sequences) && e == F32 {
				report(name+" last logits vs llama2.c", Compare("llama2.c", full[i], ref.Sequences[i].LogitsLast, 1e-4, 1e-4),
					RelErr(full[i], ref.Sequences[i].LogitsLast))
			}
		}
	}
	return failed, nil
}

// rms is the root mean square of v.
func rms(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s / float64(max(len(v), 1)))
}

// compareTol is Compare plus the relative-norm bound rtol.
func compareTol(got, want []float32, atol, rtol float64) error {
	if err := Compare("output", got, want, atol, rtol); err != nil {
		return err
	}
	if rel := RelErr(got, want); rel > rtol {
		return fmt.Errorf("relative error %.3g above %g", rel, rtol)
	}
	return nil
}

// benchSeqs is seqs.json, written by scripts/hf_bench.py beside its checkpoint.
type benchSeqs struct {
	Seqs [][]int `json:"seqs"`
	Rows []int   `json:"rows"`
}

// bench times LastLogits (scoring: the logits of a few rows at the last
// token) on the benchmark checkpoint and prints one BENCH line. When
// hf_rows.json (HF's logits of the same rows) is there, it compares them
// with the engine's and returns 1 if they differ by more than 5e-2 in
// relative norm (two bf16 implementations; HF also keeps its residual
// stream in bf16).
func bench(ctx context.Context, opts SelfTestOptions, w io.Writer, log *slog.Logger) (failed int, err error) {
	b, err := os.ReadFile(filepath.Join(opts.BenchDir, "seqs.json"))
	if err != nil {
		return 0, fmt.Errorf("cuda: bench: %w", err)
	}
	var bs benchSeqs
	if err := json.Unmarshal(b, &bs); err != nil {
		return 0, fmt.Errorf("cuda: bench: seqs.json: %w", err)
	}
	m, err := model.Load(opts.BenchDir)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	start := time.Now()
	en, err := NewEngineWith(m, Options{Device: opts.Device, Precision: opts.Precision}, log)
	if err != nil {
		return 0, err
	}
	defer en.Close()
	fmt.Fprintf(w, "INFO bench: loaded %s in %v (%v)\n", opts.BenchDir, time.Since(start).Round(time.Millisecond), en.Elem())
	tokens := 0
	for _, s := range bs.Seqs {
		tokens += len(s)
	}
	reps := max(opts.BenchReps, 1)
	first, err := en.LastLogits(ctx, bs.Seqs, bs.Rows) // warm-up: allocator, cuBLAS heuristics
	if err != nil {
		return 0, err
	}
	if b, err := os.ReadFile(filepath.Join(opts.BenchDir, "hf_rows.json")); err == nil {
		var hf struct {
			Logits [][]float32 `json:"logits"`
		}
		if err := json.Unmarshal(b, &hf); err != nil {
			return 0, fmt.Errorf("cuda: bench: hf_rows.json: %w", err)
		}
		var got, want []float32
		for i := range first {
			if i < len(hf.Logits) {
				got, want = append(got, first[i]...), append(want, hf.Logits[i]...)
			}
		}
		rel := RelErr(got, want)
		status := "PASS"
		if !(rel <= 5e-2) || len(hf.Logits) != len(first) {
			status, failed = "FAIL", 1
		}
		fmt.Fprintf(w, "%s engine %-60s relerr %.2e\n", status, fmt.Sprintf("%v scoring logits vs HF transformers (%d seqs)", en.Elem(), len(hf.Logits)), rel)
	}
	times := make([]float64, reps)
	for i := range times {
		t0 := time.Now()
		if _, err := en.LastLogits(ctx, bs.Seqs, bs.Rows); err != nil {
			return 0, err
		}
		times[i] = time.Since(t0).Seconds()
	}
	sort.Float64s(times)
	med := times[len(times)/2]
	cfg := m.Config
	// FLOPs of prefill scoring per token: 2 N' + A with A = 4 s d L (GPU.md),
	// N' the non-embedding parameters; s is each sequence's own length.
	nonEmb := float64(WeightBytes(cfg, F32)/4) - float64(cfg.VocabSize*cfg.HiddenSize) - float64(cfg.HiddenSize)
	if !cfg.TieWordEmbeddings {
		nonEmb -= float64(cfg.VocabSize * cfg.HiddenSize)
	}
	var flops float64
	for _, s := range bs.Seqs {
		l := float64(len(s))
		flops += l * (2*nonEmb + 4*l*float64(cfg.HiddenSize*cfg.NumHiddenLayers))
	}
	fmt.Fprintf(w, "BENCH go_scoring samples=%d tokens=%d reps=%d median_s=%.4f samples_per_s=%.2f tokens_per_s=%.0f tflops=%.1f mfu=%.3f\n",
		len(bs.Seqs), tokens, reps, med, float64(len(bs.Seqs))/med, float64(tokens)/med, flops/med/1e12, flops/med/H200DenseBF16)
	return failed, nil
}
