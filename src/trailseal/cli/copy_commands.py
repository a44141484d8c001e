"""``trailseal copy-log``: move logs between stores (SQLite and PostgreSQL), verified."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click

from trailseal.cli.app import cli
from trailseal.cli.audit import _exit_for, _headline, _report_problems
from trailseal.cli.common import Context, pass_context, progress
from trailseal.copycheck import CopyCheck, check_copy
from trailseal.copylog import CopyLimits, CopyResult, copy_log
from trailseal.core.note import b64encode
from trailseal.datadir import DataDir
from trailseal.errors import ConfigError, NotFoundError
from trailseal.keyfiles import copy_key_files
from trailseal.storage.base import Storage
from trailseal.storage.urls import StorageUrl, open_storage, parse

_EXAMPLE = """\b
Examples:
  # SQLite data directory -> PostgreSQL, with the signing keys for a new data directory
  trailseal --data-dir /srv/trailseal copy-log \\
      --to 'postgresql://trailseal@db.internal:5432/audit?schema=trailseal' \\
      --keys-to /srv/trailseal-pg
  # and back, into a SQLite file
  trailseal copy-log --from 'postgresql://trailseal@db.internal:5432/audit' \\
      --to sqlite:///srv/restore/trailseal.db --log default
"""

_EXIT = """\b
Exit status:
   0  every log copied, the copy verified and is consistent with the source
   1  the source is tampered (an entry does not match its checkpoint), or the
      copy does not verify
   3  a source checkpoint is not validly signed by a key of the log
   4  the destination already holds a different history of the log (nothing
      written), or the source forked
   5  the copy misses entries
   6  no such log in the source, or no SQLite file at --from
   8  the destination is ahead of the source, or a key file would be overwritten
   9  a database failed; what was committed is a verified prefix, run again
"""


@contextmanager
def _open_source(ctx: Context, from_url: str | None) -> Iterator[tuple[Storage, str]]:
    """The source store and how to name it: the data directory's store by default."""
    if from_url is None:
        data_dir = DataDir.open(ctx.data_dir)
        try:
            yield data_dir.storage, f"data directory {ctx.data_dir}"
        finally:
            data_dir.close()
        return
    url = parse(from_url)
    if url.engine == "sqlite" and url.path is not None and not url.path.is_file():
        raise NotFoundError(f"--from: no SQLite database at {url.path}")
    store = open_storage(url, migrate=False)
    try:
        yield store, str(url)
    finally:
        store.close()


def _open_dest(to_url: str) -> tuple[Storage, StorageUrl]:
    url = parse(to_url)
    if url.engine == "sqlite" and url.path is not None and not url.path.parent.is_dir():
        raise ConfigError(
            f"--to: the folder {url.path.parent} does not exist; create it first (mode 0700)"
        )
    return open_storage(url, migrate=True), url


def _print_result(result: CopyResult, check: CopyCheck, keys: int) -> None:
    click.echo(f"log {result.name!r} ({result.origin})")
    copied = (
        f"{result.entries_copied} entries, {result.checkpoints_copied} checkpoints, "
        f"{result.key_events_copied} key events"
    )
    if result.created:
        click.echo(f"  copied {copied}")
    elif result.checkpoints_copied or result.key_events_copied:
        click.echo(f"  resumed at size {result.resumed_at}, copied {copied}")
    else:
        click.echo(f"  already up to date at size {result.resumed_at}: nothing to copy")
    click.echo(
        f"  the copy holds {result.tree_size} entries, {result.checkpoints_total} checkpoints, "
        f"{result.key_events_total} key events; root {b64encode(result.root_hash)}"
    )
    report = check.report
    click.echo(
        f"  verified {report.entries_checked} entries, {report.checkpoints_checked} checkpoints, "
        f"{report.tiles_checked} tiles with the log's {keys} verifier key(s)"
    )
    click.echo(f"  consistent with the source: {check.consistency}")
    click.echo(f"  time: copy {result.seconds:.2f} s, verify {check.seconds:.2f} s")


@cli.command("copy-log", epilog=_EXAMPLE + "\n" + _EXIT)
@click.option(
    "--to",
    "to_url",
    required=True,
    metavar="URL",
    help="The destination store: sqlite:///path/trailseal.db or "
    "postgresql://user@host:5432/db?schema=name (created and migrated if needed).",
)
@click.option(
    "--from",
    "from_url",
    metavar="URL",
    help="The source store, as for --to [default: the data directory's store].",
)
@click.option(
    "--log",
    "log_names",
    multiple=True,
    metavar="NAME",
    help="Copy only this log; repeatable [default: every log of the source].",
)
@click.option(
    "--keys-to",
    metavar="DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also copy the logs' signer key files from the data directory into DIR/keys "
    "(0700, files 0600; an existing different file is never overwritten).",
)
@click.option(
    "--batch-entries",
    default=CopyLimits().max_batch_entries,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Entries per destination transaction (whole checkpoints only).",
)
@pass_context
def copy_log_command(
    ctx: Context,
    to_url: str,
    from_url: str | None,
    log_names: tuple[str, ...],
    keys_to: Path | None,
    batch_entries: int,
) -> None:
    """Copy logs to another store, e.g. from SQLite to PostgreSQL and back.

    Each log keeps its name, origin, key history, every entry byte for byte with its
    index and idempotency key, and every signed checkpoint in its original order. The
    tree is rebuilt while copying: a source checkpoint whose signature or root does not
    match the source's entries stops the copy, so a tampered store is never laundered.

    When the destination already holds a log, its checkpoints must be the source's
    first ones byte for byte: then only the rest is copied (an interrupted copy resumes).
    Otherwise nothing is written. Afterwards the copy is verified as `trailseal verify`
    does, with the source's verifier keys, and its latest checkpoint is checked to be
    consistent with the source's. Passwords in URLs are never printed.

    The global --log option does not apply here; use the command's own --log.
    """
    limits = CopyLimits(max_batch_entries=batch_entries)
    with ExitStack() as stack:
        source, source_name = stack.enter_context(_open_source(ctx, from_url))
        names = list(dict.fromkeys(log_names)) or [info.name for info in source.list_logs()]
        if not names:
            raise NotFoundError(f"the source ({source_name}) holds no logs; nothing to copy")
        for name in names:
            source.get_log(name)  # every name exists before the destination is touched
        dest, dest_url = _open_dest(to_url)
        stack.callback(dest.close)
        data_dir = stack.enter_context(_data_dir_for_keys(ctx, keys_to))
        click.echo(f"copying {len(names)} log(s) from {source_name} to {dest_url}")
        for name in names:
            _copy_one(source, dest, name, limits, data_dir, keys_to)


@contextmanager
def _data_dir_for_keys(ctx: Context, keys_to: Path | None) -> Iterator[DataDir | None]:
    if keys_to is None:
        yield None
        return
    data_dir = DataDir.open(ctx.data_dir)  # signer keys live only in a data directory
    try:
        yield data_dir
    finally:
        data_dir.close()


def _copy_one(
    source: Storage,
    dest: Storage,
    name: str,
    limits: CopyLimits,
    data_dir: DataDir | None,
    keys_to: Path | None,
) -> None:
    src_log = source.get_log(name)
    latest = source.latest_checkpoint(src_log.id)
    try:
        dst_latest = dest.latest_checkpoint(dest.get_log(name).id)
    except NotFoundError:  # not in the destination yet: the whole log is to copy
        dst_latest = None
    held = dst_latest.tree_size if dst_latest else 0
    todo = (latest.tree_size if latest else 0) - held
    with progress(todo, f"copying {name}") as bar:
        result = copy_log(source, dest, name, limits=limits, progress=bar.update)
    with progress(result.tree_size, f"verifying {name}") as bar:
        check = check_copy(source, dest, name, progress=bar.update)
    events = source.key_events(src_log.id)
    verifiers = {ev.verifier for ev in events}
    if not check.report.ok:
        problems = _headline(check.report.problems)
        click.echo(f"log {name!r}: the copy does not verify", err=True)
        _report_problems(problems)
        raise click.exceptions.Exit(_exit_for(problems))
    _print_result(result, check, len(verifiers))
    if data_dir is not None and keys_to is not None:
        for k in copy_key_files(data_dir, src_log, events, keys_to):
            state = "active" if k.active else "retired"
            if k.status == "missing":
                click.echo(f"  signing key {k.key_id:08x} ({state}): no file {k.path} to copy")
                if k.active:
                    click.echo(
                        f"warning: log {name!r} cannot be appended to from {keys_to} without "
                        f"its active key {k.key_id:08x}",
                        err=True,
                    )
            else:
                where = "copied to" if k.status == "copied" else "already in"
                click.echo(f"  signing key {k.key_id:08x} ({state}): {where} {k.path}")
