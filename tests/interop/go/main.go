// river-interop drives River's own Go client (the version pinned in go.mod) against the
// database civic-workers shares with it, so interop tests can check both directions.
//
//	river-interop insert   --kind K [--queue Q] [--count N] [--args JSON] [--priority P] [--max-attempts N]
//	                       [--scheduled-in D] [--tags a,b] [--metadata JSON] [--unique-by-args]
//	river-interop get      --id N            the job as River decodes it, and River's retry policy for it
//	river-interop cancel   --id N            Client.JobCancel
//	river-interop retry    --id N            Client.JobRetry
//	river-interop pause    --queue Q         Client.QueuePause (resume: Client.QueueResume)
//	river-interop work     --kinds k1,k2 [--queue Q] [--timeout D] [--fetch-poll-interval D]
//	river-interop elect    --id ID [--duration D] [--queue Q] [--kinds k1] [--rescue-after D]
//	river-interop migrate-up [--target N] [--dry-run]   rivermigrate (also migrate-down, migrate-validate,
//	                                                    migrate-versions)
//
// Common flags: --database-url (default $DATABASE_URL), --schema (default metadata), --verbose.
// Results are JSON on stdout; River's logs go to stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
)

// command is one subcommand: it registers its flags, then runs with the pool and a base config.
type command func(fs *flag.FlagSet) func(ctx context.Context, pool *pgxpool.Pool, cfg *river.Config) error

var commands = map[string]command{
	"insert":           insertCommand,
	"get":              getCommand,
	"cancel":           cancelCommand,
	"retry":            retryCommand,
	"pause":            pauseCommand(true),
	"resume":           pauseCommand(false),
	"work":             workCommand,
	"elect":            electCommand,
	"migrate-up":       migrateCommand("up"),
	"migrate-down":     migrateCommand("down"),
	"migrate-validate": validateCommand,
	"migrate-versions": versionsCommand,
}

func usage() {
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: river-interop %v [flags] (see -h of each)\n", names)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dbURL := fs.String("database-url", os.Getenv("DATABASE_URL"), "Postgres URL")
	schema := fs.String("schema", "metadata", "schema holding River's tables")
	verbose := fs.Bool("verbose", false, "River logs at info level (default: warn)")
	run := cmd(fs)
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

func emit(v any) error { return json.NewEncoder(os.Stdout).Encode(v) }

// ident quotes schema.table; an empty schema leaves it to search_path, as River does.
func ident(schema, table string) string {
	if schema == "" {
		return pgx.Identifier{table}.Sanitize()
	}
	return pgx.Identifier{schema, table}.Sanitize()
}
