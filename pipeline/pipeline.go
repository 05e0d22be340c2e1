// Package pipeline runs ReLLa's stages from a config: prepare the data,
// embed items, retrieve (SUBR), score zero-shot, and train LoRA (ReiT).
// Each stage writes under the run's output_dir and can be rerun alone.
package pipeline

import (
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/rella-project/rella/configs"
	"github.com/rella-project/rella/distributed"
	"github.com/rella-project/rella/internal/atomicfile"
	"github.com/rella-project/rella/shard"
)

// Runner holds what every stage needs.
type Runner struct {
	Cfg      *configs.Config
	Log      *slog.Logger
	Progress io.Writer // stderr, or a *progress.Reporter: bars on a terminal, else a progress line every 30 s (training: every logging_steps)
	Out      io.Writer // results a person reads (stdout)
	// SUBRDir, when set, holds the SUBR artefacts (embeddings, vectors,
	// selections) instead of OUTPUT_DIR/subr, so runs that differ only in K
	// or N share one set of item embeddings.
	SUBRDir string
	// Force lets training resume from a checkpoint whose run-defining
	// settings differ from the current config (the checkpoint's win).
	Force bool
	// Shard, when set, makes Score handle only that contiguous slice of the
	// samples, under <variant folder>/shards/ (see MergeScores).
	Shard *shard.Spec
	// Comm, when set, makes Train one rank of a data-parallel run (see
	// trainer.Job.Comm); only rank 0 evaluates and writes. nil: one process.
	Comm distributed.Communicator

	fp         fingerprints // of the data, model and tokenizer, once computed
	warnedAUC  bool         // the undefined-AUC warning was given
	gemmLogged bool         // a CPU engine has said which GEMM it uses
	// embedChunkDone, when set, is called after each saved chunk of item
	// embeddings with the number of items done (tests interrupt there).
	embedChunkDone func(done int)
}

// subrPath returns a path inside the folder of the SUBR artefacts.
func (r *Runner) subrPath(name string) string {
	if r.SUBRDir != "" {
		return filepath.Join(r.SUBRDir, name)
	}
	return r.path("subr", name)
}

// path returns a path inside the run's output folder.
func (r *Runner) path(elem ...string) string {
	return filepath.Join(append([]string{r.Cfg.OutputDir}, elem...)...)
}

// writeJSON writes v as indented JSON, atomically.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'))
}
