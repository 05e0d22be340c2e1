package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/internal/runlock"
	"github.com/rella-project/rella/pipeline"
	"github.com/rella-project/rella/shard"
)

// shardFlags are --shard and --shards of score and embed.
type shardFlags struct {
	spec  *string
	count *int
}

func addShardFlags(fs *flag.FlagSet) shardFlags {
	return shardFlags{
		spec: fs.String("shard", "", "handle only the I-th of N contiguous slices: I/N (0-based, e.g. 3/8), or auto to take I and N from "+
			"Slurm array (SLURM_ARRAY_TASK_ID with _COUNT or _MIN/_MAX), Kubernetes Indexed Job (JOB_COMPLETION_INDEX) or RANK/WORLD_SIZE variables; "+
			"writes <folder>/shards/IIIII-of-NNNNN, skipped when already finished; `rella merge` puts the shards together"),
		count: fs.Int("shards", 0, "with --shard auto: the number of shards, for launchers that only give the index (Kubernetes Indexed Jobs; or set RELLA_SHARDS); checked against the launcher's count otherwise"),
	}
}

// resolve returns the shard the flags name (nil for an unsharded run).
func (f shardFlags) resolve(e *env) (*shard.Spec, error) {
	switch *f.spec {
	case "":
		if *f.count != 0 {
			return nil, usageErrorf("--shards only applies with --shard auto")
		}
		return nil, nil
	case "auto":
		sp, from, err := shard.Auto(e.getenv, *f.count)
		if err != nil {
			return nil, err
		}
		e.log.Info("shard from the launcher", "shard", sp.String(), "from", from)
		return &sp, nil
	}
	if *f.count != 0 {
		return nil, usageErrorf("--shards only applies with --shard auto (--shard %s already says the count)", *f.spec)
	}
	sp, err := shard.Parse(*f.spec)
	if err != nil {
		return nil, usageErrorf("--shard: %v", err)
	}
	return &sp, nil
}

// claimShard is claim for a command that may run one shard: a sharded run
// locks OUTPUT_DIR/.rella.lock.shard-IIIII-of-NNNNN instead of the folder,
// so that the N shards of a run (array tasks sharing one output_dir) run at
// once, while a second process on the same shard is refused; an unsharded
// run (and merge) takes the folder lock.
func claimShard(e *env, r *pipeline.Runner, name string, args []string, n needs, sp *shard.Spec) (func(), error) {
	if sp == nil {
		return claim(e, r, name, args, n)
	}
	lock, err := runlock.AcquireFile(r.Cfg.OutputDir, runlock.ShardFileName(sp.Index, sp.Count), e.commandLine(name, args))
	if err != nil {
		return nil, fmt.Errorf("output_dir: shard %s: %w", sp, err)
	}
	release := func() {
		if err := lock.Release(); err != nil {
			e.log.Warn("output_dir: releasing the shard lock", "file", lock.Path(), "err", err)
		}
	}
	if n.model {
		if err := checkModel(r); err != nil {
			release()
			return nil, err
		}
	}
	return release, nil
}

func embedCommand() command {
	return command{
		name:    "embed",
		summary: "embed every item with the model (SUBR); writes OUTPUT_DIR/subr/item_embeddings.safetensors (or one shard of it)",
		usage:   "rella embed CONFIG|-c CONFIG [--shard I/N|auto [--shards N]] [key=value ...]",
		examples: []string{
			"rella embed configs/quickstart.yaml",
			"rella embed -c configs/ml1m-zeroshot.yaml data.dir=/data/ml-1m output_dir=runs/ml1m",
			"rella embed -c configs/ml1m-zeroshot-subr.yaml --shard 0/4   # then 1/4, 2/4, 3/4, then rella merge",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("embed")
			cfg := configFlag(fs)
			sf := addShardFlags(fs)
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			sp, err := sf.resolve(e)
			if err != nil {
				return err
			}
			release, err := claimShard(e, r, "embed", args, needs{model: true}, sp)
			if err != nil {
				return err
			}
			defer release()
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			if sp != nil {
				return r.EmbedShard(ctx, ds, *sp)
			}
			_, err = r.Embed(ctx, ds)
			return err
		},
	}
}

func mergeCommand() command {
	return command{
		name: "merge",
		summary: "put together the shards of `score --shard` / `embed --shard`: checks every shard is there and made with the same settings, " +
			"then writes predictions.jsonl + metrics.json (and item_embeddings.safetensors) as an unsharded run does",
		usage: "rella merge CONFIG|-c CONFIG [--split test|valid|train] [key=value ...]",
		examples: []string{
			"rella merge configs/ml1m-zeroshot.yaml output_dir=runs/ml1m",
			"rella merge -c configs/ml1m-zeroshot.yaml --split valid",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("merge")
			cfg := configFlag(fs)
			split := fs.String("split", "", "split whose score shards to merge: test, valid or train (default: evaluation.split)")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *split, err = splitOr(*split, r); err != nil {
				return err
			}
			release, err := claim(e, r, "merge", args, needs{})
			if err != nil {
				return err
			}
			defer release()
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			return mergeRun(ctx, e, r, ds, *split)
		},
	}
}

// mergeRun merges the embedding shards (when there are any), then the score
// shards of split, and prints the merged metrics.
func mergeRun(ctx context.Context, e *env, r *pipeline.Runner, ds *data.Dataset, split string) error {
	embedded, err := r.MergeEmbeddings(ctx, ds)
	if err != nil {
		return err
	}
	res, err := r.MergeScores(ctx, ds, split)
	if embedded && errors.Is(err, pipeline.ErrNoShards) {
		fmt.Fprintf(e.stdout, "merged the item embeddings; no score shards of the %s split to merge\n", split)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, (&pipeline.Summary{Rows: res}).Table())
	return nil
}

// splitOr is the --split value flag, else the config's evaluation.split,
// checked by checkSplit.
func splitOr(flag string, r *pipeline.Runner) (string, error) {
	split := cmp.Or(flag, r.Cfg.Evaluation.Split)
	return split, checkSplit(split)
}

// checkSplit accepts train, valid and test.
func checkSplit(split string) error {
	switch split {
	case "train", "valid", "test":
		return nil
	}
	return usageErrorf("--split must be train, valid or test, got %q", split)
}
