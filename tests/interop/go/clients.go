package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// recordWorker records each job in interop_worked and completes it in the same
// transaction, so the table holds exactly one row per completed job. Args
// {"sleep": S, "sleep_attempts": K} make it first wait S seconds (until its context
// ends) on attempts up to K (all attempts without K): a job that hangs once.
type recordWorker struct {
	river.WorkerDefaults[rawArgs]
	pool   *pgxpool.Pool
	schema string
	id     string
}

func (w *recordWorker) Work(ctx context.Context, job *river.Job[rawArgs]) error {
	var opts struct {
		Sleep         float64 `json:"sleep"`
		SleepAttempts *int    `json:"sleep_attempts"`
	}
	_ = json.Unmarshal(job.Args.raw, &opts) // args that are not an object just don't sleep
	if opts.Sleep > 0 && (opts.SleepAttempts == nil || job.Attempt <= *opts.SleepAttempts) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(opts.Sleep * float64(time.Second))):
		}
	}
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (job_id, kind, worker, attempt) VALUES ($1, $2, $3, $4)`,
		ident(w.schema, "interop_worked")), job.ID, job.Kind, w.id, job.Attempt); err != nil {
		return err
	}
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// startWorking starts a client working queue with a recordWorker for each kind.
func startWorking(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config, queue, kinds string) (*river.Client[pgx.Tx], error) {
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
		job_id bigint NOT NULL, kind text NOT NULL, worker text NOT NULL DEFAULT 'go',
		attempt int, worked_at timestamptz NOT NULL DEFAULT now())`,
		ident(cfg.Schema, "interop_worked"))); err != nil {
		return nil, err
	}
	id := cfg.ID
	if id == "" {
		id = fmt.Sprintf("go-%d", os.Getpid())
		cfg.ID = id
	}
	cfg.Workers = river.NewWorkers()
	for _, kind := range strings.Split(kinds, ",") {
		if kind = strings.TrimSpace(kind); kind == "" {
			return nil, errors.New("--kinds must list job kinds")
		}
		river.AddWorkerArgs(cfg.Workers, rawArgs{kind: kind}, &recordWorker{pool: pool, schema: cfg.Schema, id: id})
	}
	cfg.Queues = map[string]river.QueueConfig{queue: {MaxWorkers: 20}}
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return nil, err
	}
	return client, client.Start(ctx)
}

func workCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	queue := fs.String("queue", river.QueueDefault, "queue to work")
	kinds := fs.String("kinds", "", "comma-separated job kinds to register (required)")
	id := fs.String("id", "", "client ID (default go-<pid>)")
	timeout := fs.Duration("timeout", 60*time.Second, "fail (exit 1) if the queue is not empty by then")
	poll := fs.Duration("fetch-poll-interval", 0, "FetchPollInterval (0: River's 1 s); a long one leaves wake-ups to NOTIFY")
	expect := fs.Int("expect", 0, "exit once this many jobs are worked (0: once the queue has been empty for 2 s)")
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		cfg.ID, cfg.FetchPollInterval = *id, *poll
		// A worker only: the tests' leaders are elected elsewhere.
		cfg.LeaderElectionDisabled = true
		client, err := startWorking(ctx, pool, cfg, *queue, *kinds)
		if err != nil {
			return err
		}
		defer stopClient(client)
		if *expect > 0 {
			return untilWorked(ctx, pool, cfg.Schema, cfg.ID, *expect, *timeout)
		}
		return untilEmpty(ctx, pool, cfg.Schema, *queue, *timeout)
	}
}

// untilEmpty returns once queue has had no unfinished job for 2 s.
func untilEmpty(ctx context.Context, pool *pgxpool.Pool, schema, queue string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var emptySince time.Time
	for ; ; time.Sleep(200 * time.Millisecond) {
		var left int
		if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE queue = $1
			AND state IN ('available', 'running', 'scheduled', 'retryable')`,
			ident(schema, "river_job")), queue).Scan(&left); err != nil {
			return err
		}
		switch {
		case left > 0:
			emptySince = time.Time{}
		case emptySince.IsZero():
			emptySince = time.Now()
		case time.Since(emptySince) >= 2*time.Second:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timeout after %s with %d unfinished jobs in queue %q", timeout, left, queue)
		}
	}
}

// untilWorked returns once worker id has recorded n jobs (a worker that must be up before the jobs exist).
func untilWorked(ctx context.Context, pool *pgxpool.Pool, schema, id string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for ; ; time.Sleep(50 * time.Millisecond) {
		var worked int
		if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE worker = $1`,
			ident(schema, "interop_worked")), id).Scan(&worked); err != nil {
			return err
		}
		if worked >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timeout after %s with %d of %d jobs worked", timeout, worked, n)
		}
	}
}

func electCommand(fs *flag.FlagSet) func(context.Context, *pgxpool.Pool, *river.Config) error {
	id := fs.String("id", fmt.Sprintf("go-interop-%d", os.Getpid()), "client ID (river_leader.leader_id)")
	duration := fs.Duration("duration", 20*time.Second, "how long to run (0: until SIGTERM)")
	queue := fs.String("queue", "interop_elect", "queue the client works")
	kinds := fs.String("kinds", "interop_elect_noop", "kinds it works (and its rescuer rescues; others it discards)")
	rescueAfter := fs.Duration("rescue-after", 0, "RescueStuckJobsAfter (0: River's 1 h)")
	jobTimeout := fs.Duration("job-timeout", 0, "JobTimeout (0: River's 1 min)")
	return func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
		cfg.ID, cfg.RescueStuckJobsAfter, cfg.JobTimeout = *id, *rescueAfter, *jobTimeout
		client, err := startWorking(ctx, pool, cfg, *queue, *kinds)
		if err != nil {
			return err
		}
		defer stopClient(client)
		// River has no public "am I leader" API; river_leader is the source of truth.
		ticker := time.NewTicker(500 * time.Millisecond)
		defer ticker.Stop()
		var end <-chan time.Time
		if *duration > 0 {
			end = time.After(*duration)
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-end:
				return nil
			case <-ticker.C:
			}
			var leaderID *string
			err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT leader_id FROM %s WHERE expires_at > now()`,
				ident(cfg.Schema, "river_leader"))).Scan(&leaderID)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			_ = emit(map[string]any{"id": *id, "is_leader": leaderID != nil && *leaderID == *id, "leader_id": leaderID,
				"ts": time.Now().UTC().Format(time.RFC3339Nano)})
		}
	}
}

// stopClient stops gracefully: finishes running jobs, flushes completions and
// resigns leadership (deleting its river_leader row).
func stopClient(client *river.Client[pgx.Tx]) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Stop(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "river-interop: stop: %v\n", err)
	}
}
