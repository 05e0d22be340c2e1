package retrieval

import (
	"fmt"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/pyrand"
)

// Mix builds the ReiT training set (RELLA.md 5). It draws n of the training
// samples as the authors do (Python's random.seed(seed) then
// random.sample(range(len(train)), n), kept in draw order; n = 0 takes all
// samples in split order) and builds each one twice: with recency histories
// (useSUBR false) and with SUBR histories (useSUBR true). trainType "mixed"
// interleaves them [orig0, aug0, orig1, aug1, ...] (2n samples), "original"
// keeps only the recency copies and "retrieval" only the SUBR copies.
func Mix(train []data.Sample, n int, seed int64, trainType string) (samples []data.Sample, useSUBR []bool, err error) {
	switch trainType {
	case TrainOriginal, TrainRetrieval, TrainMixed:
	default:
		return nil, nil, fmt.Errorf("retrieval.train_type: unknown %q", trainType)
	}
	if n < 0 || n > len(train) {
		return nil, nil, fmt.Errorf("retrieval.train_samples: %d, want 0..%d (the training split's size)", n, len(train))
	}
	var drawn []int
	if n == 0 {
		drawn = make([]int, len(train))
		for i := range drawn {
			drawn[i] = i
		}
	} else {
		drawn, err = pyrand.NewPython(seed).Sample(len(train), n)
		if err != nil {
			return nil, nil, fmt.Errorf("retrieval: mix: %w", err)
		}
	}
	per := 1
	if trainType == TrainMixed {
		per = 2
	}
	samples = make([]data.Sample, 0, per*len(drawn))
	useSUBR = make([]bool, 0, per*len(drawn))
	for _, i := range drawn {
		if trainType != TrainRetrieval {
			samples = append(samples, train[i])
			useSUBR = append(useSUBR, false)
		}
		if trainType != TrainOriginal {
			samples = append(samples, train[i])
			useSUBR = append(useSUBR, true)
		}
	}
	return samples, useSUBR, nil
}
