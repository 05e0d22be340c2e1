// Package experiments turns the results of ReLLa's two studies into tables
// and plots: AUC against the history length K (zero-shot, recency vs SUBR)
// and AUC against the number of training samples N (few-shot, ReiT vs its
// ablations).
//
// A study's runs are the lead's business; a possible config schema for a
// study driver is
//
//	study:
//	  name: ml1m-k             # output files name.csv and name.png
//	  param: K                 # K: history length (linear axis); N: training samples (log axis)
//	  values: [5, 10, 15, 20, 25, 30, 40, 50, 60]
//	  variants: [score/test-recency, score/test-subr]   # result folders whose metrics.json give the AUC
//	  base: configs/ml1m-zeroshot.yaml  # config each run overrides data.history_len or retrieval.train_samples in
//
// with one run per (value, variant) and WriteStudy called on the collected rows.
package experiments

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/rella-project/rella/internal/atomicfile"
)

// The two study parameters.
const (
	ParamK = "K" // history length: linear x axis
	ParamN = "N" // number of training samples: logarithmic x axis
)

// Row is one point of a study: a variant's AUC at X = K or N.
type Row struct {
	Param   string  // ParamK or ParamN, the same for all rows of a study
	X       int     // the value of K or N
	Variant string  // e.g. "zero-shot", "zero-shot + SUBR", "ReiT"
	AUC     float64 // test AUC
}

// Plot size: 8 x 5 inches at 150 dpi, 1200 x 750 pixels.
const (
	plotWidth  = 8 * vg.Inch
	plotHeight = 5 * vg.Inch
	plotDPI    = 150
)

// Info says what a study measured, for the plot's title.
type Info struct {
	Dataset string // e.g. ml-1m
	Model   string // model folder or name; the title shows its base name
	Split   string // the split the AUC is measured on
	N       int    // samples scored for each point
}

// title is the plot's title: the study, then the dataset, model, split and
// sample count that are known.
func (in Info) title(name string) string {
	var parts []string
	if in.Dataset != "" {
		parts = append(parts, in.Dataset)
	}
	if in.Model != "" {
		parts = append(parts, "model "+modelLabel(in.Model))
	}
	if in.Split != "" {
		parts = append(parts, in.Split+" split")
	}
	if in.N > 0 {
		parts = append(parts, "n = "+strconv.Itoa(in.N))
	}
	if len(parts) == 0 {
		return name
	}
	return name + "\n" + strings.Join(parts, ", ")
}

// modelLabel is a model folder's name for a title: its base name, with the
// parent's when the base alone says nothing ("runs/quickstart/model" is
// "quickstart/model", "/models/vicuna-13b" is "vicuna-13b").
func modelLabel(path string) string {
	path = filepath.Clean(path)
	base := filepath.Base(path)
	if parent := filepath.Base(filepath.Dir(path)); strings.EqualFold(base, "model") && parent != "." && parent != "/" {
		return parent + "/" + base
	}
	return base
}

// WriteStudy writes dir/name.csv (columns param, x, variant, auc; rows
// sorted by variant in order of first appearance, then by x; an undefined
// AUC, NaN, is an empty cell) and dir/name.png (one line per variant, AUC
// against x, ticks at the studied values; log x axis for N; titled with
// info). Both files are written atomically.
func WriteStudy(dir, name string, info Info, rows []Row) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name != filepath.Base(name) {
		return fmt.Errorf("experiments: study name %q is not a plain file name", name)
	}
	series, err := group(rows)
	if err != nil {
		return fmt.Errorf("experiments: study %s: %w", name, err)
	}
	param := rows[0].Param
	err = atomicfile.Write(filepath.Join(dir, name+".csv"), func(w io.Writer) error {
		return writeCSV(w, param, series)
	})
	if err != nil {
		return fmt.Errorf("experiments: study %s: %w", name, err)
	}
	p, err := newPlot(info.title(name), param, series)
	if err != nil {
		return fmt.Errorf("experiments: study %s: %w", name, err)
	}
	c := vgimg.NewWith(vgimg.UseWH(plotWidth, plotHeight), vgimg.UseDPI(plotDPI))
	p.Draw(draw.New(c))
	err = atomicfile.Write(filepath.Join(dir, name+".png"), func(w io.Writer) error {
		_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("experiments: study %s: %w", name, err)
	}
	return nil
}

// series is one variant's points, sorted by x.
type series struct {
	variant string
	pts     []Row
}

// group validates rows and splits them by variant (order of first
// appearance), each sorted by x.
func group(rows []Row) ([]series, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("no rows")
	}
	param := rows[0].Param
	if param != ParamK && param != ParamN {
		return nil, fmt.Errorf("row 0: param %q, want %q or %q", param, ParamK, ParamN)
	}
	var out []series
	index := map[string]int{}
	seen := map[string]bool{}
	for i, r := range rows {
		switch {
		case r.Param != param:
			return nil, fmt.Errorf("row %d: param %q differs from %q", i, r.Param, param)
		case r.Variant == "":
			return nil, fmt.Errorf("row %d: empty variant", i)
		case !math.IsNaN(r.AUC) && !(r.AUC >= 0 && r.AUC <= 1):
			return nil, fmt.Errorf("row %d: AUC %v outside [0, 1]", i, r.AUC)
		case r.X <= 0:
			return nil, fmt.Errorf("row %d: %s = %d, want positive", i, param, r.X)
		}
		key := r.Variant + "\x00" + strconv.Itoa(r.X)
		if seen[key] {
			return nil, fmt.Errorf("row %d: variant %q has two rows at %s = %d", i, r.Variant, param, r.X)
		}
		seen[key] = true
		j, ok := index[r.Variant]
		if !ok {
			j = len(out)
			index[r.Variant] = j
			out = append(out, series{variant: r.Variant})
		}
		out[j].pts = append(out[j].pts, r)
	}
	defined := false
	for _, s := range out {
		slices.SortFunc(s.pts, func(a, b Row) int { return a.X - b.X })
		for _, r := range s.pts {
			defined = defined || !math.IsNaN(r.AUC)
		}
	}
	if !defined {
		return nil, fmt.Errorf("every AUC is undefined (the scored samples have one label): nothing to plot")
	}
	return out, nil
}

func writeCSV(w io.Writer, param string, ss []series) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"param", "x", "variant", "auc"}); err != nil {
		return err
	}
	for _, s := range ss {
		for _, r := range s.pts {
			auc := strconv.FormatFloat(r.AUC, 'f', -1, 64)
			if math.IsNaN(r.AUC) {
				auc = "" // undefined: one label only
			}
			rec := []string{param, strconv.Itoa(r.X), r.Variant, auc}
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

func newPlot(title, param string, ss []series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "AUC"
	if param == ParamN {
		p.X.Label.Text = "N (training samples)"
		p.X.Scale = plot.LogScale{}
	} else {
		p.X.Label.Text = "K (history length)"
	}
	p.X.Tick.Marker = studiedTicks(ss)
	p.Legend.Top = true
	p.Legend.Left = false
	args := make([]any, 0, 2*len(ss))
	for _, s := range ss {
		xy := make(plotter.XYs, 0, len(s.pts))
		for _, r := range s.pts {
			if !math.IsNaN(r.AUC) { // an undefined AUC is no point
				xy = append(xy, plotter.XY{X: float64(r.X), Y: r.AUC})
			}
		}
		args = append(args, s.variant, xy)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	p.Add(plotter.NewGrid())
	// Head room above the highest point keeps the legend (top right) off
	// the lines.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, r := range s.pts {
			if !math.IsNaN(r.AUC) {
				lo, hi = min(lo, r.AUC), max(hi, r.AUC)
			}
		}
	}
	span := max(hi-lo, 0.01)
	p.Y.Min = lo - 0.05*span
	p.Y.Max = hi + 0.15*span*float64(len(ss)+1)
	return p, nil
}

// studiedTicks puts the x axis' labelled ticks at the studied values.
func studiedTicks(ss []series) plot.ConstantTicks {
	var xs []int
	for _, s := range ss {
		for _, r := range s.pts {
			xs = append(xs, r.X)
		}
	}
	slices.Sort(xs)
	xs = slices.Compact(xs)
	ticks := make(plot.ConstantTicks, len(xs))
	for i, x := range xs {
		ticks[i] = plot.Tick{Value: float64(x), Label: strconv.Itoa(x)}
	}
	return ticks
}
