"""Command line: `serve` (default), `create-user`, `create-api-key` (contract section 1)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import Settings
from .crypto import SecretKeyError, new_secret_key
from .errors import Conflict, DatabaseUnavailable, NotFound
from .logs import configure_logging
from .plain_text import email_problem, one_line
from .store import open_store
from .workflow import DTMF_DIGITS


class _Step(argparse.Action):
    """--say and --dtmf share one ordered list of caller steps."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        kind = "dtmf" if option_string == "--dtmf" else "say"
        if kind == "dtmf" and (not isinstance(values, str) or values not in DTMF_DIGITS):
            parser.error(f"--dtmf takes one of 0-9, * or #, not {values!r}")
        steps = list(getattr(namespace, self.dest, None) or [])
        steps.append((kind, values))
        setattr(namespace, self.dest, steps)


def _parser() -> argparse.ArgumentParser:
    """Flags may come before or after the command: `app.py --port 9000` serves too."""

    def db_flag(p: argparse.ArgumentParser, default: object) -> None:
        p.add_argument("--db", default=default,
                       help="SQLite database path or postgresql:// URL (env AGENT_STREAM_DB)")

    def serve_flags(p: argparse.ArgumentParser, default: object) -> None:
        p.add_argument("--host", default=default, help="listen address (env AGENT_STREAM_HOST)")
        p.add_argument("--port", type=int, default=default, help="listen port (env AGENT_STREAM_PORT)")
        p.add_argument("--workers", type=int, default=default,
                       help="server processes sharing the port (env AGENT_STREAM_WORKERS; default 1)")
        # How the parent of --workers starts each worker (workers.py): not for people.
        p.add_argument("--worker-index", type=int, default=default, help=argparse.SUPPRESS)
        p.add_argument("--parent-pid", type=int, default=default, help=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(prog="app.py", description="Agent Stream voice-agent gateway")
    db_flag(parser, None)
    serve_flags(parser, None)
    sub = parser.add_subparsers(dest="command")
    # Subcommand flags default to SUPPRESS so they never overwrite the top-level ones.
    serve = sub.add_parser("serve", help="run the server (default)")
    db_flag(serve, argparse.SUPPRESS)
    serve_flags(serve, argparse.SUPPRESS)

    user = sub.add_parser("create-user", help="create a user (and its organization)")
    db_flag(user, argparse.SUPPRESS)
    user.add_argument("--email", required=True)
    user.add_argument("--password", required=True)
    user.add_argument("--org", default="Default", help="organization name (created if new)")
    user.add_argument("--admin", action="store_true")
    user.add_argument("--monthly-minutes", type=int, help="monthly call minutes (default unlimited)")
    user.add_argument("--max-concurrent-calls", type=int, help="concurrent calls (default unlimited)")

    call = sub.add_parser("call", help="place a test call to an agent and print the conversation")
    db_flag(call, argparse.SUPPRESS)
    call.add_argument("agent_uuid")
    call.add_argument("--say", dest="steps", action=_Step, metavar="TEXT",
                      help="something the caller says (repeatable, in order)")
    call.add_argument("--dtmf", dest="steps", action=_Step, metavar="DIGIT",
                      help="a key the caller presses (repeatable, in order with --say)")
    call.add_argument("--out", type=Path, help="copy the stereo recording here")
    call.add_argument("--provider",
                      help="whose framing the call speaks (default: the first provider); the "
                           "organization's configuration of it, else a stand-in")

    sub.add_parser("new-secret-key", help="print a new key for AGENT_STREAM_SECRET_KEY")

    key = sub.add_parser("create-api-key", help="create an API key; printed once, last line")
    db_flag(key, argparse.SUPPRESS)
    key.add_argument("--email", required=True)
    key.add_argument("--name", default="default")
    return parser


async def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    problems = [f"--email: {problem}" for problem in [email_problem(args.email)] if problem]
    if not one_line(args.org) or not args.org.strip():
        problems.append("--org: name the organization on one line, without control characters")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 2
    for flag, value in (("--monthly-minutes", args.monthly_minutes),
                        ("--max-concurrent-calls", args.max_concurrent_calls)):
        if value is not None and value < 0:
            print(f"error: {flag} must be zero or more", file=sys.stderr)
            return 2
    store = await open_store(settings)
    try:
        org = await store.get_or_create_organization(args.org)
        user = await store.create_user(
            organization_id=org.id,
            email=args.email,
            password=args.password,
            is_admin=args.admin,
            monthly_minutes_limit=args.monthly_minutes,
            max_concurrent_calls=args.max_concurrent_calls,
        )
    except Conflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(f"created user {user.email} (id {user.id}) in organization {org.name!r}")
    return 0


async def _create_api_key(settings: Settings, args: argparse.Namespace) -> int:
    store = await open_store(settings)
    try:
        user = await store.get_user_by_email(args.email)
        api_key, plaintext = await store.create_api_key(user.id, args.name)
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(f"created API key {api_key.name!r} for {user.email}; it is shown only once:")
    print(plaintext)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "new-secret-key":
        print(new_secret_key())
        return 0
    try:
        settings = Settings.from_env(host=args.host, port=args.port, db=args.db,
                                     workers=args.workers, worker_index=args.worker_index or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(command, settings, args)
    except SecretKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:  # at start: no database to serve from
        print(f"error: {settings.database_shown}: {exc}", file=sys.stderr)
        return 2


def _run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "create-user":
        return asyncio.run(_create_user(settings, args))
    if command == "create-api-key":
        return asyncio.run(_create_api_key(settings, args))
    if command == "call":
        configure_logging(level=logging.WARNING, log_format=settings.log_format)
        from .testcall import parse_steps, run_test_call

        return asyncio.run(
            run_test_call(settings, args.agent_uuid, parse_steps(args.steps), args.out,
                          args.provider)
        )
    parent_pid: int | None = args.parent_pid  # set: a worker of `--workers`
    if parent_pid is None and settings.workers > 1:
        configure_logging(log_format=settings.log_format)
        from .workers import supervise

        return supervise(settings)
    configure_logging(log_format=settings.log_format,
                      worker=None if parent_pid is None else settings.worker_index)
    return _serve(settings, parent_pid)


def _serve(settings: Settings, parent_pid: int | None) -> int:
    """One server process: alone, or one of the workers of a `--workers` parent."""
    from .memory import keep_collections_short
    from .server import create_app, runner_options, server_event_loop  # imports pipecat

    logging.getLogger(__name__).info(
        "Agent Stream on http://%s:%d (database %s), instance %s",
        settings.host, settings.port, settings.database_shown, settings.instance_id,
    )
    app = create_app(settings)
    keep_collections_short()  # everything so far lives as long as the process: memory.py
    loop = server_event_loop()
    worker_options: dict[str, Any] = {}
    if parent_pid is not None:
        from .workers import worker_run_options

        worker_options = worker_run_options(loop, parent_pid)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=15.0,
        loop=loop,
        **runner_options(settings),
        **worker_options,
    )
    return 0
