package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/pipeline"
	"github.com/rella-project/rella/trainer"
)

// datasetCommand makes a subcommand that loads the config, prepares the
// dataset and runs stage on it.
func datasetCommand(name, summary string, n needs, stage func(ctx context.Context, r *pipeline.Runner, ds *data.Dataset) error) command {
	return command{
		name:    name,
		summary: summary,
		usage:   "rella " + name + " CONFIG|-c CONFIG [key=value ...]",
		examples: []string{
			"rella " + name + " configs/quickstart.yaml",
			"rella " + name + " -c configs/ml1m-zeroshot.yaml data.dir=/data/ml-1m output_dir=runs/ml1m",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(name)
			cfg := configFlag(fs)
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			release, err := claim(e, r, name, args, n)
			if err != nil {
				return err
			}
			defer release()
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			return stage(ctx, r, ds)
		},
	}
}

func prepareCommand() command {
	return datasetCommand("prepare", "build the CTR samples of a dataset and write OUTPUT_DIR/data/stats.json", needs{},
		func(context.Context, *pipeline.Runner, *data.Dataset) error { return nil })
}

func retrieveCommand() command {
	return datasetCommand("retrieve", "PCA the item embeddings and select every sample's SUBR top-K history", needs{},
		func(ctx context.Context, r *pipeline.Runner, ds *data.Dataset) error { return r.Retrieve(ctx, ds) })
}

func trainCommand() command {
	return command{
		name:    "train",
		summary: "fine-tune LoRA adapters (ReiT), evaluate, and write the best adapter; data-parallel over the processes torchrun, srun or mpirun start",
		usage:   "rella train CONFIG|-c CONFIG [--resume [--force]] [key=value ...]",
		examples: []string{
			"rella train configs/quickstart.yaml training.max_steps=50 output_dir=runs/try",
			"rella train configs/quickstart.yaml training.max_steps=50 output_dir=runs/try --resume",
			"torchrun --nproc-per-node 4 --no-python rella train -c configs/ml1m-reit.yaml --resume   # data-parallel: one process per GPU",
			"srun --ntasks-per-node 4 --gpus-per-task 1 rella train -c configs/ml1m-reit.yaml --resume   # with MASTER_ADDR, MASTER_PORT exported",
		},
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("train")
			cfg := configFlag(fs)
			force, resume := resumeFlags(fs, "continue from the newest complete checkpoint in OUTPUT_DIR/train")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			if *force && !*resume {
				return usageErrorf("--force only applies with --resume")
			}
			launch, err := launchOf(e)
			if err != nil {
				return err
			}
			release, err := claimRank(e, r, "train", args, needs{model: true}, launch)
			if err != nil {
				return err
			}
			defer release()
			if launch.Size > 1 {
				comm, err := connect(ctx, e, r, launch)
				if err != nil {
					return err
				}
				defer comm.Close()
				r.Comm = comm
			}
			r.Force = *force
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			res, err := r.Train(ctx, ds, *resume)
			if err != nil {
				return interrupted(e, err, e.resumeLine("train", args))
			}
			if launch.Rank != 0 {
				return nil // rank 0 prints the results
			}
			fmt.Fprint(e.stdout, (&pipeline.Summary{Rows: res}).Table())
			return nil
		},
	}
}

// resumeFlags registers --resume and --force.
func resumeFlags(fs *flag.FlagSet, resumeUsage string) (force, resume *bool) {
	force = fs.Bool("force", false, "with --resume: accept a checkpoint whose run-defining settings (learning rate, data, LoRA shape, ...) differ from the config; the checkpoint's settings win")
	resume = fs.Bool("resume", false, resumeUsage)
	return force, resume
}

// interrupted turns a training run stopped by SIGINT/SIGTERM (which saved a
// checkpoint) into a clean exit that says how to resume, and adds the same
// command to the error of a fresh run that found an earlier one; other
// errors pass unchanged.
func interrupted(e *env, err error, resume string) error {
	switch {
	case errors.Is(err, trainer.ErrInterrupted):
		fmt.Fprintf(e.stderr, "rella: %v\nrella: a checkpoint was saved; resume with: %s\n", err, resume)
		return nil
	case errors.Is(err, trainer.ErrExistingRun):
		return fmt.Errorf("%w\ncontinue it with: %s (or remove the training folder to start over)", err, resume)
	}
	return err
}
