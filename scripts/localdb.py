"""A persistent local PostgreSQL for `make run` / `make demo`, kept under $CIVIC_CACHE.

python scripts/localdb.py start|stop|url|destroy
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devenv.pg import PostgresServer

CACHE = Path(os.environ.get("CIVIC_CACHE", Path.home() / ".cache" / "civic-workers"))
PORT = int(os.environ.get("CIVIC_LOCALDB_PORT", "55432"))
DB = "civic"


def server() -> PostgresServer:
    # As root the server runs as `postgres`, which cannot enter /root: keep the data in /var/lib then.
    root = Path("/var/lib/civic-workers/localdb") if os.geteuid() == 0 else CACHE / "localdb"
    return PostgresServer(root=root, port=PORT)


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "url"
    s = server()
    if cmd == "start":
        try:
            psycopg.connect(s.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            s.start()
        with psycopg.connect(s.url(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DB}"')
        print(f"local PostgreSQL running: {s.url(DB)}", file=sys.stderr)
    elif cmd == "stop":
        s.stop()
    elif cmd == "destroy":
        s.destroy()
    elif cmd == "url":
        print(s.url(DB))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
