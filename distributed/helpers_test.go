package distributed

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
)

// TestAllReduceSlices: packing several slices into one all-reduce gives the
// bits of one all-reduce per slice, on 1, 2 and 4 ranks.
func TestAllReduceSlices(t *testing.T) {
	lens := []int{7, 0, 300, 1}
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			packed, _ := NewLocal(n)
			single, _ := NewLocal(n)
			var wg sync.WaitGroup
			got := make([][][]float32, n)
			want := make([][][]float32, n)
			for r := 0; r < n; r++ {
				wg.Go(func() {
					data := rankData32(r, 308)
					off := 0
					for _, l := range lens {
						a := append([]float32(nil), data[off:off+l]...)
						b := append([]float32(nil), data[off:off+l]...)
						off += l
						got[r] = append(got[r], a)
						want[r] = append(want[r], b)
					}
					if err := AllReduceSlices(context.Background(), packed[r], got[r]); err != nil {
						t.Error(err)
					}
					for _, b := range want[r] {
						if err := single[r].AllReduceSumFloat32(context.Background(), b); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			for r := range got {
				for k := range lens {
					for i := range got[r][k] {
						if math.Float32bits(got[r][k][i]) != math.Float32bits(want[r][k][i]) {
							t.Fatalf("rank %d slice %d [%d]: %g, want %g", r, k, i, got[r][k][i], want[r][k][i])
						}
					}
				}
			}
		})
	}
}

func TestAnyTrue(t *testing.T) {
	for _, stopper := range []int{-1, 0, 3} {
		comms, _ := NewLocal(4)
		got := make([]bool, 4)
		var wg sync.WaitGroup
		for r, c := range comms {
			wg.Go(func() {
				var err error
				if got[r], err = AnyTrue(context.Background(), c, r == stopper); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for r, g := range got {
			if g != (stopper >= 0) {
				t.Errorf("stop requested on rank %d: rank %d sees %v", stopper, r, g)
			}
		}
	}
}
