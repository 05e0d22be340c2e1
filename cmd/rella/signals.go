package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
)

// watchSignals turns the first SIGINT/SIGTERM into a graceful stop: it says
// at once what will happen and cancels the commands' context, so training
// finishes its micro-batch (a data-parallel run: its step, where the ranks
// agree to stop) and saves a checkpoint. The second signal aborts
// at once through exit; checkpoints are written to a temporary folder and
// renamed when complete, so the last complete one stays valid.
func watchSignals(sigs <-chan os.Signal, cancel context.CancelCauseFunc, w io.Writer, exit func(code int)) {
	first, ok := <-sigs
	if !ok {
		return
	}
	fmt.Fprintf(w, "\nrella: %s: stopping after the current micro-batch (a data-parallel run: after the current step); training saves a checkpoint first; %s again aborts at once\n",
		signalName(first), againHint(first))
	cancel(fmt.Errorf("%s received", signalName(first)))
	second, ok := <-sigs
	if !ok {
		return
	}
	fmt.Fprintf(w, "\nrella: second %s: aborting now; the last complete checkpoint stays valid\n", signalName(second))
	exit(signalExitCode(second))
}

func signalName(s os.Signal) string {
	switch s {
	case os.Interrupt:
		return "interrupt (Ctrl-C)"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

func againHint(s os.Signal) string {
	if s == os.Interrupt {
		return "Ctrl-C"
	}
	return "the signal"
}

// signalExitCode is the shell's status for a process killed by s (128+n).
func signalExitCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}
