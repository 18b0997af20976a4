"""The `callkeeper` command: `serve`, `check-config` and `ivr`."""

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
    check = commands.add_parser(
        "check-config", help="validate a configuration file or an IVR script"
    )
    check.add_argument("file", type=Path)
    ivr = commands.add_parser("ivr", help="run an IVR node")
    ivr.add_argument("--node", required=True, help="the node's name (stable across restarts)")
    ivr.add_argument("--config", type=Path, required=True, help="TOML file")
    ivr.add_argument("--listen", help="HOST:PORT of the node's SIP socket (default: a free port)")
    args = parser.parse_args(argv)

    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "ivr":
        return _run_ivr(args.node, args.config, args.listen)

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


def _run_ivr(node: str, path: Path, listen: str | None) -> int:
    """`callkeeper ivr`: exit 2 with one line for a bad config, script or start-up."""
    from callkeeper.ivr.errors import ScriptError
    from callkeeper.ivr.script import load_script

    try:
        config = load_config(path)
        if config.ivr.script is None:
            raise ConfigError(f"{path}: ivr.script: an IVR node needs a script")
        script = load_script(config.ivr.script)
    except (ConfigError, ScriptError) as error:
        print(f"callkeeper: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging(config.log.level, config.log.format)
    from callkeeper.io.ivr_node import NodeStartupError, parse_listen, run_ivr_node

    _install_uvloop()
    try:
        address = parse_listen(listen) if listen is not None else None
        asyncio.run(run_ivr_node(config, node, script, address))
    except NodeStartupError as error:
        print(f"callkeeper: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return 0


def _check_config(path: Path) -> int:
    """Validate a config and the IVR script it names, or an IVR script given directly (a file
    with a `[script]` table); print warnings (unreachable steps, ...) but pass."""
    from callkeeper.ivr.errors import ScriptError
    from callkeeper.ivr.script import is_script_text, load_script

    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if is_script_text(text):
            scripts = [load_script(path)]
        else:
            script = load_config(path).ivr.script
            scripts = [load_script(script)] if script is not None else []
    except (ConfigError, ScriptError) as error:
        print(f"callkeeper: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except (OSError, UnicodeDecodeError) as error:
        print(f"callkeeper: {path}: cannot read: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    for warning in (warning for script in scripts for warning in script.warnings):
        print(f"callkeeper: warning: {warning}", file=sys.stderr)
    print(f"{path}: ok")
    return 0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
