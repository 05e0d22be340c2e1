//go:build !rellagpu

package cuda

import (
	"context"
	"errors"
	"testing"
)

func TestDisabledBuildSaysHowToBuild(t *testing.T) {
	_, err := NewEngine(nil, 0, nil)
	if !errors.Is(err, ErrNoGPUSupport) {
		t.Fatalf("got %v, want ErrNoGPUSupport", err)
	}
	if got, want := err.Error(), "rella was built without GPU support; build it with scripts/build-gpu.sh"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := SelfTest(context.Background(), SelfTestOptions{}, nil, nil); !errors.Is(err, ErrNoGPUSupport) {
		t.Errorf("SelfTest: got %v", err)
	}
	if Enabled {
		t.Errorf("Enabled is true without the rellagpu tag")
	}
}
