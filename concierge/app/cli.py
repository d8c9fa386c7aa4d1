"""The ``concierge`` command: run, check, chat, init, migrate, forget, handoff, token, version.

Settings problems end the command with one line naming the variable and exit
status 2; a root supervisor that gives up ends ``run`` with status 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from concierge import __version__
from concierge.settings import Settings, SettingsError, describe, env_example, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="concierge",
        description="An AI concierge for a community on Telegram and WhatsApp.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the daemon")
    check = sub.add_parser("check", help="validate the settings and print them, secrets masked")
    check.add_argument(
        "--example", action="store_true", help="print the documented example .env instead"
    )
    chat = sub.add_parser(
        "chat", help="talk to the concierge from a terminal, through the full pipeline"
    )
    chat.add_argument("--json", action="store_true", help="print one JSON object per reply")
    chat.add_argument(
        "--user", default="local", help="who you are in the conversation (default: local)"
    )
    init = sub.add_parser(
        "init", help="write an editable copy of the default knowledge, prompts and triage rules"
    )
    init.add_argument("dir", type=Path, help="a new or empty directory")
    sub.add_parser("migrate", help="apply pending database migrations (idempotent)")
    forget = sub.add_parser("forget", help="erase a user's messages and identities")
    forget.add_argument(
        "--user", required=True, help="a user id, or a channel identity such as telegram:111111111"
    )
    handoff = sub.add_parser("handoff", help="list or close human handoffs")
    handoff_sub = handoff.add_subparsers(dest="handoff_command", required=True, metavar="ACTION")
    handoff_sub.add_parser("list", help="the open handoffs")
    close = handoff_sub.add_parser("close", help="close the open handoff of a user and tell them")
    close.add_argument(
        "--user", required=True, help="the user's channel identity, e.g. telegram:111111111"
    )
    close.add_argument("--by", default="staff", help="who closes it (recorded)")
    token = sub.add_parser("token", help="operator API tokens (for the console and /api/v1)")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_sub.add_parser(
        "issue", help="print a token signed with the first key of CONCIERGE_JWT_KEYS"
    )
    issue.add_argument(
        "--sub", required=True, help="who the token is for (named in the audit trail)"
    )
    issue.add_argument("--role", required=True, choices=("staff", "admin"))
    issue.add_argument(
        "--ttl", type=duration, default="12h", help="lifetime, e.g. 30m, 12h, 7d (default 12h)"
    )
    sub.add_parser("version", help="print the version")
    return parser


_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``30m``, ``12h``, ``7d`` in seconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a positive number and a unit, e.g. 30m, 12h or 7d"
        )
    return float(int(match[1]) * _UNIT_S[match[2]])


def _settings() -> Settings:
    return load_settings()


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _init(target: Path) -> int:
    from concierge.app.config_files import write_editable_copy
    from concierge.app.errors import CommandError

    try:
        written = write_editable_copy(target)
    except (CommandError, OSError) as exc:
        print(f"concierge: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {len(written)} files to {target}")
    print(f"use them with: CONCIERGE_CONFIG_DIR={target.resolve()}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"concierge {__version__}")
        return EXIT_OK
    if args.command == "check" and args.example:
        print(env_example(), end="")
        return EXIT_OK
    if args.command == "init":
        return _init(args.dir)
    try:
        settings = _settings()
    except SettingsError as exc:
        print(f"concierge: invalid setting {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    if args.command == "check":
        return _check(settings)
    if args.command == "token":
        from concierge.app.tokens import issue_command

        return issue_command(settings.api, subject=args.sub, role=args.role, ttl_s=args.ttl)
    return _run(args, settings)


def _check(settings: Settings) -> int:
    for line in describe(settings):
        print(line)
    from concierge.app.config_files import check_configuration
    from concierge.domain import ConfigError

    try:
        for line in check_configuration(settings.conversation.config_dir):
            print(line)
    except ConfigError as exc:
        print(f"concierge: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    print("settings: ok", file=sys.stderr)
    return EXIT_OK


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """The commands that touch the stack: their failures become one line and an exit status."""
    # Imported here so that `version` and `check` start fast and never touch the stack.
    from concierge.app.errors import CannotListen, CommandError, DataDirInUse
    from concierge.domain import ConfigError
    from concierge.store import StoreError

    failure: BaseException | None = None
    bad_config: BaseException | None = None
    try:
        return _dispatch(args, settings)
    except* (ConfigError, CannotListen, DataDirInUse) as group:
        bad_config = _first(group)
    except* (CommandError, StoreError) as group:
        # The asyncio bridge wraps errors raised while it is open in a group.
        failure = _first(group)
    if isinstance(bad_config, (CannotListen, DataDirInUse)):
        print(f"concierge: {bad_config}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    if bad_config is not None:
        print(f"concierge: invalid configuration: {bad_config}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    print(f"concierge: {failure}", file=sys.stderr)
    return EXIT_FAILED


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    import concierge.app.admin as admin
    import concierge.app.chat as chat
    import concierge.app.daemon as daemon

    match args.command:
        case "run":
            return daemon.main(settings)
        case "chat":
            return chat.main(settings, as_json=args.json, user=args.user)
        case "migrate":
            return admin.migrate(settings)
        case "forget":
            return admin.forget(settings, args.user)
        case "handoff" if args.handoff_command == "list":
            return admin.list_handoffs(settings)
        case "handoff":
            return admin.close_handoff(settings, user=args.user, by=args.by)
    raise AssertionError(f"unhandled command {args.command!r}")
