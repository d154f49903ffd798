// river-interop drives River's own Go client against the database that
// civic-workers shares with it, so interop tests can check both directions.
//
//	river-interop insert --kind K [--queue Q] [--count N] [--args '{"a":1}']
//	river-interop work   --kinds k1,k2 [--queue Q] [--until-empty] [--timeout 60s]
//	river-interop elect  --id ID [--duration 20s] [--queue Q]
//
// Common flags: --database-url (default $DATABASE_URL), --schema (default metadata).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
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

// recordWorker records each job in interop_worked and completes it in the same
// transaction, so the table holds exactly one row per completed job.
type recordWorker struct {
	river.WorkerDefaults[rawArgs]
	pool   *pgxpool.Pool
	schema string
}

func (w *recordWorker) Work(ctx context.Context, job *river.Job[rawArgs]) error {
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (job_id, kind) VALUES ($1, $2)`,
		ident(w.schema, "interop_worked")), job.ID, job.Kind); err != nil {
		return err
	}
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: river-interop insert|work|elect [flags] (see -h of each)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dbURL := fs.String("database-url", os.Getenv("DATABASE_URL"), "Postgres URL")
	schema := fs.String("schema", "metadata", "schema holding River's tables")
	verbose := fs.Bool("verbose", false, "River logs at info level (default: warn)")

	var run func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error
	switch os.Args[1] {
	case "insert":
		kind := fs.String("kind", "", "job kind (required)")
		queue := fs.String("queue", river.QueueDefault, "queue")
		count := fs.Int("count", 1, "number of jobs")
		args := fs.String("args", "{}", "job args as JSON")
		run = func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
			return insert(ctx, pool, cfg, *kind, *queue, *count, *args)
		}
	case "work":
		queue := fs.String("queue", river.QueueDefault, "queue to work")
		kinds := fs.String("kinds", "", "comma-separated job kinds to register (required)")
		fs.Bool("until-empty", true, "exit once the queue is empty (the only mode)")
		timeout := fs.Duration("timeout", 60*time.Second, "fail (exit 1) if not empty by then")
		run = func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
			return work(ctx, pool, cfg, *queue, strings.Split(*kinds, ","), *timeout)
		}
	case "elect":
		id := fs.String("id", fmt.Sprintf("go-interop-%d", os.Getpid()), "client ID (river_leader.leader_id)")
		duration := fs.Duration("duration", 20*time.Second, "how long to run")
		queue := fs.String("queue", "interop_elect", "queue the client runs (no jobs expected)")
		run = func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error {
			return elect(ctx, pool, cfg, *id, *queue, *duration)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q (want insert, work or elect)\n", os.Args[1])
		os.Exit(2)
	}
	_ = fs.Parse(os.Args[2:])

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	pool, err := pgxpool.New(ctx, *dbURL)
	if err == nil {
		defer pool.Close()
		err = run(ctx, pool, &river.Config{
			Schema: *schema,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "river-interop %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func insert(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config, kind, queue string, count int, args string) error {
	if kind == "" || count < 1 || !json.Valid([]byte(args)) {
		return errors.New("need --kind, --count >= 1 and valid JSON --args")
	}
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return err
	}
	params := make([]river.InsertManyParams, count)
	for i := range params {
		params[i] = river.InsertManyParams{
			Args:       rawArgs{kind: kind, raw: json.RawMessage(args)},
			InsertOpts: &river.InsertOpts{Queue: queue},
		}
	}
	results, err := client.InsertMany(ctx, params)
	if err != nil {
		return err
	}
	ids := make([]int64, len(results))
	for i, r := range results {
		ids[i] = r.Job.ID
	}
	return json.NewEncoder(os.Stdout).Encode(ids)
}

func work(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config, queue string, kinds []string, timeout time.Duration) error {
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
		job_id bigint NOT NULL, kind text NOT NULL,
		worker text NOT NULL DEFAULT 'go', worked_at timestamptz NOT NULL DEFAULT now())`,
		ident(cfg.Schema, "interop_worked"))); err != nil {
		return err
	}
	cfg.Workers = river.NewWorkers()
	for _, kind := range kinds {
		if kind = strings.TrimSpace(kind); kind == "" {
			return errors.New("--kinds must list job kinds")
		}
		river.AddWorkerArgs(cfg.Workers, rawArgs{kind: kind}, &recordWorker{pool: pool, schema: cfg.Schema})
	}
	cfg.Queues = map[string]river.QueueConfig{queue: {MaxWorkers: 20}}
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	defer stopClient(client)

	deadline := time.Now().Add(timeout)
	var emptySince time.Time
	for ; ; time.Sleep(200 * time.Millisecond) {
		var left int
		if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE queue = $1
			AND state IN ('available', 'running', 'scheduled', 'retryable')`,
			ident(cfg.Schema, "river_job")), queue).Scan(&left); err != nil {
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

func elect(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config, id, queue string, duration time.Duration) error {
	// River has no public "am I leader" API; river_leader is the source of truth.
	cfg.ID = id
	cfg.Workers = river.NewWorkers()
	river.AddWorkerArgs(cfg.Workers, rawArgs{kind: "interop_elect_noop"}, &recordWorker{pool: pool, schema: cfg.Schema})
	cfg.Queues = map[string]river.QueueConfig{queue: {MaxWorkers: 1}}
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	defer stopClient(client)

	out := json.NewEncoder(os.Stdout)
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	end := time.After(duration)
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
			return err
		}
		_ = out.Encode(map[string]any{
			"id":        id,
			"is_leader": leaderID != nil && *leaderID == id,
			"leader_id": leaderID,
			"ts":        time.Now().UTC().Format(time.RFC3339Nano),
		})
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

// ident quotes schema.table; an empty schema leaves it to search_path, as River does.
func ident(schema, table string) string {
	if schema == "" {
		return pgx.Identifier{table}.Sanitize()
	}
	return pgx.Identifier{schema, table}.Sanitize()
}
