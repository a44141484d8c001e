"""The ``trailseal`` command.

Errors from the library arrive here as :class:`trailseal.errors.Error`; this is the one
place that turns them into a message on stderr and an exit status (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

import sys

import click

from trailseal.cli import audit as _audit  # noqa: F401  (registers its commands)
from trailseal.cli import copy_commands as _copy  # noqa: F401  (likewise)
from trailseal.cli import db_commands as _db  # noqa: F401  (likewise)
from trailseal.cli import report_command as _report  # noqa: F401  (likewise)
from trailseal.cli import service_commands as _service  # noqa: F401  (likewise)
from trailseal.cli import slack_commands as _slack  # noqa: F401  (likewise)
from trailseal.cli.app import cli
from trailseal.cli.common import EXIT_CONFIG, EXIT_NOT_FOUND, exit_code_for
from trailseal.errors import Error


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status instead of raising SystemExit."""
    try:
        # Without standalone mode click returns, not raises, the status of a
        # `click.exceptions.Exit` raised by a command (verify's failure statuses).
        status = cli.main(args=argv, prog_name="trailseal", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except Error as e:
        click.echo(f"error: {e.diagnostics()}", err=True)
        return exit_code_for(e)
    except BrokenPipeError:
        return 0
    except OSError as e:
        # A file named on the command line (prove -o, export -o, --receipts): a message,
        # not a traceback whose status 1 would read as EXIT_TAMPERED.
        click.echo(f"error: {e}", err=True)
        status = EXIT_NOT_FOUND if isinstance(e, FileNotFoundError) else EXIT_CONFIG
    return status if isinstance(status, int) else 0


def entry_point() -> None:
    """Console script entry point."""
    sys.exit(main())


__all__ = ["cli", "entry_point", "main"]
