"""The `callkeeper` command: `serve` and `check-config`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from callkeeper import __version__
from callkeeper.config import ConfigError, load_config
from callkeeper.logging import configure_logging

EXIT_BAD_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callkeeper", description=__doc__)
    parser.add_argument("--version", action="version", version=f"callkeeper {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the call manager")
    serve.add_argument("--config", type=Path, help="TOML file (default: the embedded demo)")
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    if args.command == "check-config":
        try:
            load_config(args.file)
        except ConfigError as error:
            print(f"callkeeper: {error}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        print(f"{args.file}: ok")
        return 0

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"callkeeper: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(config.log.level, config.log.format)
    from callkeeper.io.server import StartupError, run_server

    _install_uvloop()
    try:
        asyncio.run(run_server(config, args.config))
    except StartupError as error:
        print(f"callkeeper: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
