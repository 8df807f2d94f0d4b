"""The `enclave` command: serve, mcp, worker, ingest, reindex, status, ask, eval, tune, users,
groups, keys, audit. Each concern's commands live in their own module of cli/; this one
gathers them under the root group and runs it with the exit codes of cli/common.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from cli import accounts, ask, documents, evaluate, serve, tune

enclave = click.Group(
    "enclave",
    help="Private question answering over your own documents.",
    commands=[
        documents.ingest,
        serve.serve,
        serve.mcp,
        serve.worker,
        documents.reindex,
        ask.ask,
        documents.status,
        accounts.users,
        accounts.groups,
        accounts.keys,
        accounts.audit,
        evaluate.evaluate,
        tune.tune,
    ],
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `enclave` with `argv` (default: the process's arguments); the exit code."""
    os.umask(0o077)  # the data directory's files are the server user's alone
    try:
        code = enclave.main(
            args=list(argv) if argv is not None else None,
            prog_name="enclave",
            standalone_mode=False,
        )
    except click.ClickException as exc:  # a usage error: the message and usage, exit 2
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C or end of input while click itself reads or parses
        print("enclave: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
