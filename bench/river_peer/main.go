// river-peer is the throughput bench's River peer: River's own Go client (the version pinned in
// go.mod) working the bench's no-op jobs (kind "benchmark", args {"num": n}, as bench/common.py
// inserts them) on a database our runner also works. It inserts nothing and times nothing: the
// bench hands it jobs and times it from river_job, exactly as it times our runner.
//
//	river-peer [--database-url URL] [--schema metadata] [--queue default] [--workers 2000]
//	           [--fetch-cooldown 2ms] [--fetch-poll-interval 1s] [--pool 20] [--exit-when-drained]
//
// It prints "ready" on stdout once the client has started. It stops gracefully (running jobs
// finish, their completions are written) on SIGTERM/SIGINT, or with --exit-when-drained once it
// has worked at least one job and the queue holds no available or running job.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// BenchmarkArgs is the bench's no-op job, the same kind and args shape as River's own `river bench`.
type BenchmarkArgs struct {
	Num int `json:"num"`
}

func (BenchmarkArgs) Kind() string { return "benchmark" }

type noopWorker struct {
	river.WorkerDefaults[BenchmarkArgs]
	worked *atomic.Int64
}

func (w *noopWorker) Work(ctx context.Context, job *river.Job[BenchmarkArgs]) error {
	w.worked.Add(1)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "river-peer:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		dbURL           = flag.String("database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL")
		schema          = flag.String("schema", "metadata", "schema holding River's tables")
		queue           = flag.String("queue", "default", "queue to work")
		workers         = flag.Int("workers", 2000, "MaxWorkers of the queue")
		fetchCooldown   = flag.Duration("fetch-cooldown", 2*time.Millisecond, "River's FetchCooldown (River's default: 100ms)")
		fetchPoll       = flag.Duration("fetch-poll-interval", time.Second, "River's FetchPollInterval (River's default: 1s)")
		poolSize        = flag.Int("pool", 20, "pgxpool MaxConns")
		exitWhenDrained = flag.Bool("exit-when-drained", false, "stop once a job was worked and none is available or running")
		drainCheck      = flag.Duration("drain-check", 100*time.Millisecond, "how often --exit-when-drained looks")
		logLevel        = flag.String("log-level", "", "River's logger level (debug, info, warn, error); empty: River's default logger (warn, stdout)")
	)
	flag.Parse()
	if *dbURL == "" {
		return fmt.Errorf("--database-url or DATABASE_URL is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	poolCfg, err := pgxpool.ParseConfig(*dbURL)
	if err != nil {
		return err
	}
	poolCfg.MaxConns = int32(*poolSize)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	var worked atomic.Int64
	ws := river.NewWorkers()
	river.AddWorker(ws, &noopWorker{worked: &worked})
	cfg := &river.Config{
		Schema:            *schema,
		FetchCooldown:     *fetchCooldown,
		FetchPollInterval: *fetchPoll,
		Queues:            map[string]river.QueueConfig{*queue: {MaxWorkers: *workers}},
		Workers:           ws,
	}
	if *logLevel != "" {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: lvl}))
	}
	client, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		return err
	}
	if err := client.Start(context.Background()); err != nil {
		return err
	}
	fmt.Println("ready")

	if *exitWhenDrained {
		waitDrained(ctx, pool, *schema, *queue, *drainCheck, &worked)
	} else {
		<-ctx.Done()
	}
	// A fresh context: the signal one is already cancelled, and Stop must let the completer flush.
	stopCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := client.Stop(stopCtx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	fmt.Fprintf(os.Stderr, "river-peer: stopped after working %d jobs\n", worked.Load())
	return nil
}

func waitDrained(ctx context.Context, pool *pgxpool.Pool, schema, queue string, every time.Duration, worked *atomic.Int64) {
	q := fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s.river_job WHERE state IN ('available', 'running') AND queue = $1)`,
		pgx.Identifier{schema}.Sanitize())
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if worked.Load() == 0 {
			continue
		}
		var busy bool
		if err := pool.QueryRow(ctx, q, queue).Scan(&busy); err == nil && !busy {
			return
		}
	}
}
