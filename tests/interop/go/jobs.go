package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
)

// rawArgs is a job args type of any kind carrying arbitrary JSON, so one Go
// type can insert and work jobs of kinds chosen at run time.
type rawArgs struct {
	kind string
	raw  json.RawMessage
}

func (a rawArgs) Kind() string { return a.kind }

func (a rawArgs) MarshalJSON() ([]byte, error) {
	if len(a.raw) == 0 {
		return []byte("{}"), nil
	}
	return a.raw, nil
}

func (a *rawArgs) UnmarshalJSON(b []byte) error {
	a.raw = append(a.raw[:0], b...)
	return nil
}

// insertOnly is a client that starts nothing: River's inserts, JobCancel, JobRetry,
// QueuePause/Resume and JobGet all work on a client that is never started.
func insertOnly(pool *pgxpool.Pool, cfg *river.Config) (*river.Client[pgx.Tx], error) {
	return river.NewClient(riverpgxv5.New(pool), cfg)
}

type insertResult struct {
	ID        int64 `json:"id"`
	Duplicate bool  `json:"duplicate"`
}

func insertCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	kind := fs.String("kind", "", "job kind (required)")
	queue := fs.String("queue", river.QueueDefault, "queue")
	count := fs.Int("count", 1, "number of jobs")
	args := fs.String("args", "{}", "job args as JSON")
	priority := fs.Int("priority", 0, "priority 1..4 (0: River's default)")
	maxAttempts := fs.Int("max-attempts", 0, "max attempts (0: River's default)")
	scheduledIn := fs.Duration("scheduled-in", 0, "schedule this far from now (0: not scheduled)")
	tags := fs.String("tags", "", "comma-separated tags")
	metadata := fs.String("metadata", "", "job metadata as a JSON object")
	uniqueByArgs := fs.Bool("unique-by-args", false, "UniqueOpts{ByArgs: true}")
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		if *kind == "" || *count < 1 || !json.Valid([]byte(*args)) {
			return errors.New("need --kind, --count >= 1 and valid JSON --args")
		}
		opts := river.InsertOpts{
			Queue: *queue, Priority: *priority, MaxAttempts: *maxAttempts,
			UniqueOpts: river.UniqueOpts{ByArgs: *uniqueByArgs},
		}
		if *scheduledIn != 0 {
			opts.ScheduledAt = time.Now().Add(*scheduledIn)
		}
		if *tags != "" {
			opts.Tags = strings.Split(*tags, ",")
		}
		if *metadata != "" {
			if !json.Valid([]byte(*metadata)) {
				return errors.New("--metadata must be valid JSON")
			}
			opts.Metadata = []byte(*metadata)
		}
		client, err := insertOnly(pool, cfg)
		if err != nil {
			return err
		}
		params := make([]river.InsertManyParams, *count)
		for i := range params {
			o := opts
			params[i] = river.InsertManyParams{Args: rawArgs{kind: *kind, raw: json.RawMessage(*args)}, InsertOpts: &o}
		}
		results, err := client.InsertMany(ctx, params)
		if err != nil {
			return err
		}
		out := make([]insertResult, len(results))
		for i, r := range results {
			out[i] = insertResult{ID: r.Job.ID, Duplicate: r.UniqueSkippedAsDuplicate}
		}
		return emit(out)
	}
}

// jobView is a job row as River decoded it (every field River reads), for the tests to compare.
type jobView struct {
	ID          int64                    `json:"id"`
	State       string                   `json:"state"`
	Attempt     int                      `json:"attempt"`
	MaxAttempts int                      `json:"max_attempts"`
	AttemptedAt *time.Time               `json:"attempted_at"`
	AttemptedBy []string                 `json:"attempted_by"`
	ScheduledAt time.Time                `json:"scheduled_at"`
	FinalizedAt *time.Time               `json:"finalized_at"`
	Errors      []rivertype.AttemptError `json:"errors"`
	Metadata    json.RawMessage          `json:"metadata"`
	Args        json.RawMessage          `json:"args"`
	Kind        string                   `json:"kind"`
	Queue       string                   `json:"queue"`
	Priority    int                      `json:"priority"`
	Tags        []string                 `json:"tags"`
	UniqueState []rivertype.JobState     `json:"unique_states"`
	Retry       *retryRange              `json:"retry_policy,omitempty"`
}

// retryRange is what River's DefaultClientRetryPolicy gives for the job as it was before its
// last error (the policy is called before the error is appended): the delay from the moment
// of the call, over many samples because of its ±10 % jitter.
type retryRange struct {
	MinSeconds float64 `json:"min_seconds"`
	MaxSeconds float64 `json:"max_seconds"`
}

func view(job *rivertype.JobRow) jobView {
	v := jobView{
		ID: job.ID, State: string(job.State), Attempt: job.Attempt, MaxAttempts: job.MaxAttempts,
		AttemptedAt: job.AttemptedAt, AttemptedBy: job.AttemptedBy, ScheduledAt: job.ScheduledAt,
		FinalizedAt: job.FinalizedAt, Errors: job.Errors, Metadata: job.Metadata, Args: job.EncodedArgs,
		Kind: job.Kind, Queue: job.Queue, Priority: job.Priority, Tags: job.Tags, UniqueState: job.UniqueStates,
	}
	if len(job.Errors) > 0 {
		before := *job
		before.Errors = job.Errors[:len(job.Errors)-1]
		policy := &river.DefaultClientRetryPolicy{}
		r := retryRange{MinSeconds: 1e18}
		for range 2000 {
			now := time.Now()
			s := policy.NextRetry(&before).Sub(now).Seconds()
			r.MinSeconds, r.MaxSeconds = min(r.MinSeconds, s), max(r.MaxSeconds, s)
		}
		v.Retry = &r
	}
	return v
}

func idFlag(fs *flag.FlagSet) *int64 { return fs.Int64("id", 0, "job id (required)") }

func getCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	id := idFlag(fs)
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		client, err := insertOnly(pool, cfg)
		if err != nil {
			return err
		}
		job, err := client.JobGet(ctx, *id)
		if err != nil {
			return err
		}
		return emit(view(job))
	}
}

func cancelCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	id := idFlag(fs)
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		client, err := insertOnly(pool, cfg)
		if err != nil {
			return err
		}
		job, err := client.JobCancel(ctx, *id)
		if err != nil {
			return err
		}
		return emit(view(job))
	}
}

func retryCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	id := idFlag(fs)
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		client, err := insertOnly(pool, cfg)
		if err != nil {
			return err
		}
		job, err := client.JobRetry(ctx, *id)
		if err != nil {
			return err
		}
		return emit(view(job))
	}
}

func pauseCommand(pause bool) command {
	return func(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
		queue := fs.String("queue", river.QueueDefault, "queue name (* for all)")
		return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
			client, err := insertOnly(pool, cfg)
			if err != nil {
				return err
			}
			if pause {
				err = client.QueuePause(ctx, *queue, nil)
			} else {
				err = client.QueueResume(ctx, *queue, nil)
			}
			if err != nil {
				return err
			}
			return emit(map[string]any{"queue": *queue, "paused": pause})
		}
	}
}
