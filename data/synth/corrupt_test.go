package synth

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rella-project/rella/data"
)

// TestCorrupt damages each dataset each way and checks (1) that exactly the
// reported line changed, and (2) how the real reader takes it: malformed
// lines stop data.Load with an error naming file and line, or are counted
// when SkipMalformed is set; unknown ids are dropped and counted.
func TestCorrupt(t *testing.T) {
	for _, w := range writers {
		for _, c := range []Corruption{TruncatedLine, ExtraField, InvalidEncoding, UnknownUser, UnknownItem} {
			t.Run(fmt.Sprintf("%s/%s", w.kind, c), func(t *testing.T) {
				o := DefaultOptions()
				clean, dir := t.TempDir(), t.TempDir()
				for _, d := range []string{clean, dir} {
					if err := w.write(d, o); err != nil {
						t.Fatal(err)
					}
				}
				dmg, err := Corrupt(dir, w.kind, c, 7)
				if c == UnknownUser && w.kind == data.ML25M {
					if err == nil {
						t.Fatal("no error for an ML-25M unknown user")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				before := readAll(t, clean, []string{dmg.File})[0]
				after := readAll(t, dir, []string{dmg.File})[0]
				bl, al := splitLines(before), splitLines(after)
				if len(bl) != len(al) {
					t.Fatalf("%s: %d lines, was %d", dmg.File, len(al), len(bl))
				}
				for i := range bl {
					if changed := !bytes.Equal(bl[i], al[i]); changed != (i == dmg.Line-1) {
						t.Errorf("%s:%d: changed %v, damage reported at line %d", dmg.File, i+1, changed, dmg.Line)
					}
				}
				t.Logf("%s:%d: %q -> %q", dmg.File, dmg.Line, bl[dmg.Line-1], al[dmg.Line-1])

				opts := data.DefaultOptions()
				opts.Dataset, opts.Dir, opts.HistoryLen = w.kind, clean, 5
				_, cleanRep, err := data.Load(context.Background(), opts, nil)
				if err != nil {
					t.Fatal(err)
				}
				opts.Dir = dir
				_, rep, err := data.Load(context.Background(), opts, nil)
				switch c {
				case UnknownUser, UnknownItem:
					if err != nil {
						t.Fatalf("data.Load: %v", err)
					}
					du, di := rep.UnknownUsers-cleanRep.UnknownUsers, rep.UnknownItems-cleanRep.UnknownItems
					if c == UnknownUser && (du != 1 || di != 0) || c == UnknownItem && (du != 0 || di != 1) {
						t.Errorf("unknown users +%d, unknown items +%d after %s", du, di, c)
					}
					return
				}
				where := fmt.Sprintf("%s:%d", dmg.File, dmg.Line)
				if err == nil || !strings.Contains(err.Error(), where) {
					t.Errorf("data.Load: got error %v, want one naming %s", err, where)
				}
				opts.SkipMalformed = true
				if _, rep, err = data.Load(context.Background(), opts, nil); err != nil {
					t.Fatalf("data.Load skipping malformed lines: %v", err)
				}
				malformed := 0
				for _, f := range rep.Files {
					if filepath.Base(f.Path) == dmg.File {
						malformed += f.Malformed
					}
				}
				if malformed != 1 {
					t.Errorf("report counts %d malformed records in %s, want 1", malformed, dmg.File)
				}
			})
		}
	}
}

func TestCorruptErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Corrupt(dir, data.ML1M, ExtraField, 1); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("corrupting a missing dataset: got %v", err)
	}
	if err := WriteML1M(dir, DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	if _, err := Corrupt(dir, "ml-100k", ExtraField, 1); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, err := Corrupt(dir, data.ML1M, Corruption(42), 1); err == nil {
		t.Error("unknown corruption accepted")
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// splitLines splits b after each "\n", without the empty piece after a
// final line end.
func splitLines(b []byte) [][]byte {
	l := bytes.SplitAfter(b, []byte("\n"))
	if n := len(l); len(l[n-1]) == 0 {
		l = l[:n-1]
	}
	return l
}
