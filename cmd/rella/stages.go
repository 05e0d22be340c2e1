package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/rella-project/rella/data"
	"github.com/rella-project/rella/pipeline"
	"github.com/rella-project/rella/trainer"
)

// datasetCommand makes a subcommand that loads the config, prepares the
// dataset and runs stage on it.
func datasetCommand(name, summary string, stage func(ctx context.Context, r *pipeline.Runner, ds *data.Dataset) error) command {
	return command{
		name:    name,
		summary: summary,
		usage:   "rella " + name + " -c CONFIG [key=value ...]",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(name)
			cfg := configFlag(fs)
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			return stage(ctx, r, ds)
		},
	}
}

func prepareCommand() command {
	return datasetCommand("prepare", "build the CTR samples of a dataset and write OUTPUT_DIR/data/stats.json",
		func(context.Context, *pipeline.Runner, *data.Dataset) error { return nil })
}

func embedCommand() command {
	return datasetCommand("embed", "embed every item with the model (SUBR); writes OUTPUT_DIR/subr/item_embeddings.safetensors",
		func(ctx context.Context, r *pipeline.Runner, ds *data.Dataset) error {
			_, err := r.Embed(ctx, ds)
			return err
		})
}

func retrieveCommand() command {
	return datasetCommand("retrieve", "PCA the item embeddings and select every sample's SUBR top-K history",
		func(ctx context.Context, r *pipeline.Runner, ds *data.Dataset) error { return r.Retrieve(ctx, ds) })
}

func trainCommand() command {
	return command{
		name:    "train",
		summary: "fine-tune LoRA adapters (ReiT), evaluate, and write the best adapter",
		usage:   "rella train -c CONFIG [--resume [--force]] [key=value ...]",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags("train")
			cfg := configFlag(fs)
			force := fs.Bool("force", false, "with --resume: accept a checkpoint whose run-defining settings differ from the config")
			resume := fs.Bool("resume", false, "continue from the newest complete checkpoint")
			r, err := loadRun(e, fs, cfg, args)
			if err != nil {
				return err
			}
			r.Force = *force
			ds, err := r.Prepare(ctx)
			if err != nil {
				return err
			}
			res, err := r.Train(ctx, ds, *resume)
			if err != nil {
				return interrupted(e, err, "rella train -c "+*cfg+" --resume")
			}
			fmt.Fprint(e.stdout, (&pipeline.Summary{Rows: res}).Table())
			return nil
		},
	}
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
