package data

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// writeML1MSize writes ML-1M-format files of the full dataset's size: 6,040
// users, 3,706 movies and 1,000,209 ratings (every user at least 20), with
// timestamps spread over the real data's span, grouped by user as the
// original file is.
func writeML1MSize(tb testing.TB, dir string) {
	tb.Helper()
	const users, movies, ratings = 6040, 3706, 1000209
	rng := rand.New(rand.NewPCG(1, 2))
	write := func(name string, fill func(w *bufio.Writer)) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			tb.Fatal(err)
		}
		w := bufio.NewWriterSize(f, 1<<20)
		fill(w)
		if err := w.Flush(); err != nil {
			tb.Fatal(err)
		}
		if err := f.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	ages := []string{"1", "18", "25", "35", "45", "50", "56"}
	write("users.dat", func(w *bufio.Writer) {
		for u := 1; u <= users; u++ {
			fmt.Fprintf(w, "%d::%s::%s::%d::%05d\n", u, []string{"M", "F"}[rng.IntN(2)], ages[rng.IntN(len(ages))], rng.IntN(21), rng.IntN(100000))
		}
	})
	write("movies.dat", func(w *bufio.Writer) {
		for m := 1; m <= movies; m++ {
			fmt.Fprintf(w, "%d::Movie %d (19%02d)::Drama|Comedy\n", m, m, m%100)
		}
	})
	// Per-user counts: 20 each plus the rest spread at random.
	count := make([]int, users)
	for i := range count {
		count[i] = 20
	}
	for i := 0; i < ratings-20*users; i++ {
		count[rng.IntN(users)]++
	}
	write("ratings.dat", func(w *bufio.Writer) {
		for u := 0; u < users; u++ {
			start := 956703932 + rng.Int64N(1046454590-956703932-1e6)
			for j := 0; j < count[u]; j++ {
				// Several ratings per second happen in the real data.
				t := start + rng.Int64N(int64(count[u])*30+1)
				fmt.Fprintf(w, "%d::%d::%d::%d\n", u+1, 1+rng.IntN(movies), 1+rng.IntN(5), t)
			}
		}
	})
}

// BenchmarkLoadML1MSize times Load on ML-1M-sized files. Run it with
// -benchtime=1x (and /usr/bin/time -v for the peak memory).
func BenchmarkLoadML1MSize(b *testing.B) {
	dir := b.TempDir()
	writeML1MSize(b, dir)
	opts := DefaultOptions()
	opts.Dir = dir
	b.ResetTimer()
	for range b.N {
		ds, _, err := Load(context.Background(), opts, nil)
		if err != nil {
			b.Fatal(err)
		}
		if st := ds.Stats(); st.Train+st.Valid+st.Test != 1000209-5*6040 {
			b.Fatalf("stats %+v: want %d samples", st, 1000209-5*6040)
		}
	}
}

// BenchmarkPrepareML1MSize times Prepare on ML-1M-sized files: the first
// call builds and writes the cache, the others read it.
func BenchmarkPrepareML1MSize(b *testing.B) {
	dir := b.TempDir()
	writeML1MSize(b, dir)
	cache := b.TempDir()
	opts := DefaultOptions()
	opts.Dir = dir
	b.ResetTimer()
	for range b.N {
		if _, _, _, err := Prepare(context.Background(), opts, cache, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadML25MSize times Load on ML-25M-sized files (162,541 users,
// 62,423 movies, 25,000,095 ratings, about 650 MB). It writes them to a
// temporary folder first, which takes a while; run it on demand with
// -benchtime=1x.
func BenchmarkLoadML25MSize(b *testing.B) {
	const users, movies, ratings = 162541, 62423, 25000095
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	mf, err := os.Create(filepath.Join(dir, "movies.csv"))
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(mf, 1<<20)
	w.WriteString("movieId,title,genres\n")
	for m := 1; m <= movies; m++ {
		fmt.Fprintf(w, "%d,\"Movie, number %d (2000)\",Drama|Comedy\n", m, m)
	}
	w.Flush()
	mf.Close()
	rf, err := os.Create(filepath.Join(dir, "ratings.csv"))
	if err != nil {
		b.Fatal(err)
	}
	w = bufio.NewWriterSize(rf, 1<<20)
	w.WriteString("userId,movieId,rating,timestamp\n")
	count := make([]int, users)
	for i := range count {
		count[i] = 20
	}
	for i := 0; i < ratings-20*users; i++ {
		count[rng.IntN(users)]++
	}
	var line []byte
	for u := 0; u < users; u++ {
		start := 789652009 + rng.Int64N(1574327703-789652009-1e7)
		for j := 0; j < count[u]; j++ {
			line = strconv.AppendInt(line[:0], int64(u+1), 10)
			line = append(line, ',')
			line = strconv.AppendInt(line, int64(1+rng.IntN(movies)), 10)
			r := 1 + rng.IntN(10)
			line = append(line, ',', byte('0'+r/2), '.', "05"[r%2], ',')
			line = strconv.AppendInt(line, start+rng.Int64N(int64(count[u])*30+1), 10)
			line = append(line, '\n')
			w.Write(line)
		}
	}
	w.Flush()
	rf.Close()
	opts := DefaultOptions()
	opts.Dataset, opts.Dir = ML25M, dir
	b.ResetTimer()
	for range b.N {
		ds, _, err := Load(context.Background(), opts, nil)
		if err != nil {
			b.Fatal(err)
		}
		if st := ds.Stats(); st.Test != 70000 || st.Train != 90000 {
			b.Fatalf("stats %+v", st)
		}
	}
}
