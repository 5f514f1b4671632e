"""The `notifier` command (also `python -m app`): one code base, one command per role.

  notifier serve     the HTTP API (what `uvicorn app.main:app` runs); with DELIVERY=embedded,
                     the default, it also delivers
  notifier worker    delivery only, no HTTP: beside API processes that run with DELIVERY=off
  notifier migrate   bring the database's schema up to this version, then exit
  notifier health    exit 0 while a worker on this machine beats in the database, 1 if not;
                     it reads only, and exits 1 if the schema is not this version's
  notifier keys new NAME
                     a fresh random API key for caller NAME, and the [[keys]] table (with
                     the key's digest only) to paste into the keys file

Settings come from the environment or `.env`, as for the service.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import secrets
import socket
import sys
from collections.abc import Callable, Sequence

from app.errors import NotifierError
from app.settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except NotifierError as exc:  # the database is unusable, say: a message, not a traceback
        print(f"notifier {args.command}: {exc}", file=sys.stderr)
        return 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="notifier",
        description="Email notifications over HTTP: the API, the delivery worker and their"
        " upkeep. Settings come from the environment or .env.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="the HTTP API (with DELIVERY=embedded, the default, it also delivers)",
        description="Serve the HTTP API, as `uvicorn app.main:app` does.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker",
        help="deliver only, no HTTP (beside API processes with DELIVERY=off)",
        description="Deliver due notifications until SIGTERM; in-flight sends then get"
        " SHUTDOWN_GRACE_SECONDS to finish. Migrates the database first.",
    )
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser(
        "migrate",
        help="bring the database's schema up to date, then exit",
        description="Bring the schema of the database at DATABASE_URL up to this version."
        " Safe to run while other processes use it, and from several at once.",
    )
    migrate.set_defaults(run=_migrate)

    health = commands.add_parser(
        "health",
        help="exit 0 while a worker on this machine has a fresh heartbeat, 1 if not",
        description="Exit 0 when a worker's heartbeat in the database is fresh (by default:"
        " a worker on this machine, as a container's healthcheck wants), 1 with the reason"
        " when there is none or it is old.",
    )
    health.add_argument(
        "--max-age",
        type=float,
        metavar="SECONDS",
        help="a heartbeat older than this is stale (default: three beats, from POLL_INTERVAL)",
    )
    health.add_argument(
        "--any-host", action="store_true", help="count the workers on every machine"
    )
    health.set_defaults(run=_health)

    keys = commands.add_parser(
        "keys",
        help="make API keys",
        description="Make API keys for the keys file (API_KEYS_FILE).",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new_key = key_commands.add_parser(
        "new",
        help="print a fresh random key and the [[keys]] table to paste",
        description="Print a fresh random key (256 bits) for caller NAME, then the [[keys]]"
        " table to paste into the keys file: it holds only the key's SHA-256 digest. Reads"
        " no settings.",
    )
    new_key.add_argument("name", metavar="NAME", type=_key_name, help="the caller's name")
    new_key.set_defaults(run=_new_key)
    return top


def _key_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise argparse.ArgumentTypeError("1 to 64 letters, digits, '_', '.' or '-'")
    return value


def _new_key(args: argparse.Namespace) -> int:
    key = secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(
        f"{key}\n"
        "\n"
        f"# the key above goes to {args.name} alone; the keys file needs only its digest:\n"
        "[[keys]]\n"
        f'name = "{args.name}"\n'
        f'sha256 = "{digest}"'
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(load_settings()), host=args.host, port=args.port)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from app.delivery.process import run_worker

    asyncio.run(run_worker(load_settings()))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.store.opening import migrate

    asyncio.run(migrate(load_settings()))
    print("notifier migrate: the database schema is up to date")
    return 0


def _health(args: argparse.Namespace) -> int:
    from app.delivery.heartbeat import fresh_within
    from app.ops.worker_health import judge_workers
    from app.store.opening import open_store_as_is

    settings = load_settings()
    max_age: float = args.max_age if args.max_age is not None else fresh_within(settings)

    async def judge() -> tuple[bool, str]:
        # read-only: a healthcheck runs every few seconds, it must not migrate (nor take the
        # migration lock, nor create a database) each time
        store = await open_store_as_is(settings)
        try:
            host = None if args.any_host else socket.gethostname()
            verdict = await judge_workers(store, host=host, max_age=max_age)
        finally:
            await store.close()
        return verdict.fresh, verdict.message

    fresh, message = asyncio.run(judge())
    print(f"notifier health: {message}", file=sys.stdout if fresh else sys.stderr)
    return 0 if fresh else 1
