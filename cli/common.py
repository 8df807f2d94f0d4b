"""What every `enclave` command shares: `--config` and `--data`, loading the settings, and the
exit codes users script against: 0 done, 1 a failure (a file, a model, a store), 2 a usage or
settings error, 130 interrupted (Ctrl-C)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click

import retriever.privacy  # noqa: F401  (offline switches before heavy imports)
from config.settings import SettingsError, load_settings
from retriever.question import ANSWER_MODES as ANSWER_MODE_NAMES
from retriever.question import MODES
from service.identity import SCOPES

Command = Callable[..., int]
RETRIEVAL_MODES = click.Choice(MODES)
ANSWER_MODES = click.Choice(ANSWER_MODE_NAMES)
ROLES = click.Choice(SCOPES)


def path_type(**kwargs: Any) -> click.Path:
    """A path option or argument, given to the command as a `Path`."""
    return click.Path(path_type=Path, **kwargs)


def exit_with(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def fail(message: str, code: int = 2) -> NoReturn:
    """A refusal found by the command itself: `enclave: message` on stderr, then exit."""
    print(f"enclave: {message}", file=sys.stderr)
    exit_with(code)


def enclave_command(
    name: str,
    help: str,
    parent: click.Group | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Callable[[Command], click.Command]:
    """A command with `--config` and `--data` whose function takes the loaded settings first
    and returns the exit code. `overrides` names options that override a setting when given
    (option name -> setting name). Errors end as they always have: a settings error with 2,
    a missing file or a failure with 1, Ctrl-C with 130, each as one `enclave: ...` line."""
    moved = dict(overrides or {})

    def decorate(function: Command) -> click.Command:
        @functools.wraps(function)
        def run(config: str | None, data: Path | None, **options: Any) -> NoReturn:
            given = {moved[o]: options.pop(o) for o in list(options) if o in moved}
            try:
                settings = load_settings(
                    config, data_dir=data, **{k: v for k, v in given.items() if v is not None}
                )
                code = function(settings, **options)
            except click.exceptions.Exit:  # the command chose its exit code (`fail`)
                raise
            except SettingsError as exc:
                print(f"enclave: {exc}", file=sys.stderr)
                code = 2
            except (FileNotFoundError, RuntimeError, ValueError) as exc:
                print(f"enclave: {exc}", file=sys.stderr)
                code = 1
            except KeyboardInterrupt:
                print("enclave: interrupted", file=sys.stderr)
                code = 130
            exit_with(code)

        run = click.option(
            "--data", type=path_type(), help="data directory (or ENCLAVE_DATA; default ./data)"
        )(run)
        run = click.option("--config", help="TOML settings file (or ENCLAVE_CONFIG)")(run)
        make = parent.command if parent is not None else click.command
        return make(name, help=help, short_help=help)(run)

    return decorate
