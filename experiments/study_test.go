package experiments

import (
	"encoding/csv"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotutil"
)

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s does not decode as PNG: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 1000 || b.Dy() < 600 || b.Dx() > 4000 || b.Dy() > 4000 {
		t.Fatalf("%s: size %dx%d", path, b.Dx(), b.Dy())
	}
	// The first two lines' colours must appear: the lines were drawn.
	for i := 0; i < 2; i++ {
		cr, cg, cb, _ := plotutil.Color(i).RGBA()
		found := false
		for y := b.Min.Y; y < b.Max.Y && !found; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r, g, bb, _ := img.At(x, y).RGBA()
				if r>>8 == cr>>8 && g>>8 == cg>>8 && bb>>8 == cb>>8 {
					found = true
					break
				}
			}
		}
		if !found {
			t.Errorf("%s: no pixel of line colour %d", path, i)
		}
	}
}

func TestWriteStudyK(t *testing.T) {
	dir := t.TempDir()
	rows := []Row{
		{ParamK, 30, "zero-shot", 0.5461},
		{ParamK, 5, "zero-shot", 0.55},
		{ParamK, 5, "zero-shot + SUBR", 0.5612},
		{ParamK, 15, "zero-shot", 0.5522},
		{ParamK, 30, "zero-shot + SUBR", 0.5883},
		{ParamK, 15, "zero-shot + SUBR", 0.571},
	}
	if err := WriteStudy(dir, "ml1m-k", Info{}, rows); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"param", "x", "variant", "auc"},
		{"K", "5", "zero-shot", "0.55"},
		{"K", "15", "zero-shot", "0.5522"},
		{"K", "30", "zero-shot", "0.5461"},
		{"K", "5", "zero-shot + SUBR", "0.5612"},
		{"K", "15", "zero-shot + SUBR", "0.571"},
		{"K", "30", "zero-shot + SUBR", "0.5883"},
	}
	got := readCSV(t, filepath.Join(dir, "ml1m-k.csv"))
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("csv:\n%v\nwant\n%v", got, want)
	}
	checkPNG(t, filepath.Join(dir, "ml1m-k.png"))
}

func TestWriteStudyNLog(t *testing.T) {
	dir := t.TempDir()
	var rows []Row
	for i, n := range []int{64, 128, 256, 1024, 8192} {
		rows = append(rows, Row{ParamN, n, "ReiT", 0.70 + 0.01*float64(i)}, Row{ParamN, n, "recency only", 0.68 + 0.01*float64(i)})
	}
	if err := WriteStudy(dir, "ml1m-n", Info{}, rows); err != nil {
		t.Fatal(err)
	}
	got := readCSV(t, filepath.Join(dir, "ml1m-n.csv"))
	if len(got) != 11 || got[1][0] != "N" || got[1][1] != "64" || got[1][2] != "ReiT" || got[10][1] != "8192" {
		t.Fatalf("csv: %v", got)
	}
	checkPNG(t, filepath.Join(dir, "ml1m-n.png"))
}

func TestWriteStudyRejects(t *testing.T) {
	dir := t.TempDir()
	bad := map[string][]Row{
		"empty":         nil,
		"mixed params":  {{ParamK, 5, "a", 0.5}, {ParamN, 5, "a", 0.5}},
		"unknown param": {{"M", 5, "a", 0.5}},
		"duplicate":     {{ParamK, 5, "a", 0.5}, {ParamK, 5, "a", 0.6}},
		"auc above 1":   {{ParamK, 5, "a", 1.5}},
		"all undefined": {{ParamK, 5, "a", math.NaN()}},
		"zero N":        {{ParamN, 0, "a", 0.5}},
		"empty variant": {{ParamK, 5, "", 0.5}},
	}
	for name, rows := range bad {
		if err := WriteStudy(dir, "s", Info{}, rows); err == nil {
			t.Errorf("%s: want error", name)
		}
	}
	if err := WriteStudy(dir, "../s", Info{}, []Row{{ParamK, 5, "a", 0.5}}); err == nil {
		t.Error("name with a path: want error")
	}
	if _, err := os.Stat(filepath.Join(dir, "s.csv")); !os.IsNotExist(err) {
		t.Error("a rejected study left a file behind")
	}
}

// The title names the dataset, model, split and n; the x ticks sit at the
// studied values; an undefined AUC (one label) is an empty CSV cell and no
// point, not a failed write.
func TestStudyTitleTicksAndUndefinedAUC(t *testing.T) {
	info := Info{Dataset: "ml-1m", Model: "/models/vicuna-13b", Split: "test", N: 8}
	if got := info.title("auc-vs-K"); !strings.Contains(got, "ml-1m") || !strings.Contains(got, "vicuna-13b") ||
		!strings.Contains(got, "test split") || !strings.Contains(got, "n = 8") || strings.Contains(got, "/models") {
		t.Errorf("title %q", got)
	}
	for path, want := range map[string]string{"runs/quickstart/model": "model quickstart/model", "model": "model model", "/srv/vicuna-7b/": "model vicuna-7b"} {
		if got := (Info{Model: path}).title("t"); !strings.HasSuffix(got, "\n"+want) {
			t.Errorf("model %q: title %q, want it to end in %q", path, got, want)
		}
	}
	rows := []Row{{ParamK, 5, "a", 0.6}, {ParamK, 15, "a", math.NaN()}, {ParamK, 30, "a", 0.65}, {ParamK, 5, "b", 0.55}}
	ss, err := group(rows)
	if err != nil {
		t.Fatal(err)
	}
	var got []float64
	for _, tk := range studiedTicks(ss) {
		got = append(got, tk.Value)
	}
	if !slices.Equal(got, []float64{5, 15, 30}) {
		t.Errorf("ticks %v, want 5 15 30", got)
	}
	dir := t.TempDir()
	if err := WriteStudy(dir, "k", info, rows); err != nil {
		t.Fatalf("a study with an undefined AUC: %v", err)
	}
	recs := readCSV(t, filepath.Join(dir, "k.csv"))
	if recs[2][1] != "15" || recs[2][3] != "" {
		t.Errorf("undefined AUC row: %v", recs[2])
	}
	checkPNG(t, filepath.Join(dir, "k.png"))
}
