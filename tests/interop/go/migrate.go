package main

import (
	"context"
	"errors"
	"flag"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// River's own migrator (the rivermigrate package): River's CLI module is not served past
// v0.47.0, so the newest River's view of a schema comes from here.
func migrator(pool *pgxpool.Pool, cfg *river.Config) (*rivermigrate.Migrator[pgx.Tx], error) {
	return rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: cfg.Schema, Logger: cfg.Logger})
}

func migrateCommand(direction rivermigrate.Direction) command {
	return func(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
		target := fs.Int("target", 0, "TargetVersion (0: all up / one step down; -1 down: everything)")
		dryRun := fs.Bool("dry-run", false, "report what would run, change nothing")
		return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
			m, err := migrator(pool, cfg)
			if err != nil {
				return err
			}
			res, err := m.Migrate(ctx, direction, &rivermigrate.MigrateOpts{TargetVersion: *target, DryRun: *dryRun})
			if err != nil {
				return err
			}
			versions := []int{}
			for _, v := range res.Versions {
				versions = append(versions, v.Version)
			}
			return emit(map[string]any{"direction": res.Direction, "versions": versions})
		}
	}
}

// validateCommand prints River's verdict and exits 1 when it is not OK (as River's CLI does).
func validateCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		m, err := migrator(pool, cfg)
		if err != nil {
			return err
		}
		res, err := m.Validate(ctx, nil)
		if err != nil {
			return err
		}
		if err := emit(map[string]any{"ok": res.OK, "messages": res.Messages}); err != nil {
			return err
		}
		if !res.OK {
			return errors.New("validation failed")
		}
		return nil
	}
}

func versionsCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		m, err := migrator(pool, cfg)
		if err != nil {
			return err
		}
		existing, err := m.ExistingVersions(ctx)
		if err != nil {
			return err
		}
		known, have := []int{}, []int{}
		for _, v := range m.AllVersions() {
			known = append(known, v.Version)
		}
		for _, v := range existing {
			have = append(have, v.Version)
		}
		return emit(map[string]any{"known": known, "existing": have})
	}
}
