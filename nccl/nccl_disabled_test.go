//go:build !rellagpu

package nccl

import (
	"errors"
	"testing"
)

func TestDisabled(t *testing.T) {
	if Enabled {
		t.Fatal("Enabled in a build without rellagpu")
	}
	if err := Open(""); !errors.Is(err, ErrNoGPUSupport) {
		t.Errorf("Open: %v", err)
	}
	if _, err := InitRank(1, UniqueID{}, 0); !errors.Is(err, ErrNoGPUSupport) {
		t.Errorf("InitRank: %v", err)
	}
	var c *Comm
	if err := c.AllReduceSumFloat32(0, 0, 1, 0); !errors.Is(err, ErrNoGPUSupport) {
		t.Errorf("AllReduceSumFloat32: %v", err)
	}
}
