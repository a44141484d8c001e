"""Commands that create, write and read a log."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
import orjson

from trailseal import __version__
from trailseal.bundle import parse_entry
from trailseal.cli.common import (
    EXIT_CODES,
    Context,
    open_data_dir,
    pass_context,
    progress,
    resolve_context,
)
from trailseal.core.checkpoint import verify_checkpoint
from trailseal.core.merkle import verify_consistency
from trailseal.core.note import b64encode
from trailseal.datadir import CONFIG_FILE, DEFAULT_LOG, DataDir
from trailseal.errors import ConfigError, EntryError, InconsistencyError, NotFoundError
from trailseal.ledger import Ledger, PreparedEntry, prepare
from trailseal.service.schema import migrate_postgres
from trailseal.storage.base import StoredEntry

_EPILOG = "Exit status:\n\n\b\n" + "\n".join(f"{k:>2}  {v}" for k, v in EXIT_CODES.items())


@click.group(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Data directory [env TRAILSEAL_DATA_DIR; default ./trailseal-data].",
)
@click.option("--log", "log_name", help="Log name [env TRAILSEAL_LOG; default: the default log].")
@click.version_option(__version__, prog_name="trailseal")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, log_name: str | None) -> None:
    """trailseal: a tamper-evident audit log anyone can verify (RFC 9162, C2SP)."""
    ctx.obj = resolve_context(data_dir, log_name)


@cli.command()
@click.option(
    "--origin",
    help="The log's permanent identity, e.g. audit.example.com/acme/slack "
    "[default: localhost/trailseal/<log>].",
)
@click.option(
    "--exist-ok",
    is_flag=True,
    help="If the data directory already exists, print its log's verifier key and succeed.",
)
@click.option(
    "--storage",
    "storage_url",
    metavar="URL",
    help="Where the log lives: postgresql://user@host:5432/db?schema=trailseal for "
    "PostgreSQL (run as the role that owns the schema; the password goes in PGPASSWORD or "
    "~/.pgpass, never in the URL) [default: SQLite in the data directory].",
)
@pass_context
def init(ctx: Context, origin: str | None, exist_ok: bool, storage_url: str | None) -> None:
    """Create a data directory with a first log and its signing key.

    Prints the verifier key: publish it, because everyone who checks the log needs it.
    With --storage postgresql://..., the log lives in PostgreSQL (the schema is created
    or migrated first) and the data directory keeps the configuration and the keys.
    """
    name = ctx.log or DEFAULT_LOG
    if exist_ok and (ctx.data_dir / CONFIG_FILE).exists():
        with open_data_dir(ctx) as data_dir:
            info = data_dir.log(ctx.log)
            active = [k for k in data_dir.keys(info) if k.active]
        if origin and origin != info.origin:
            raise ConfigError(
                f"{ctx.data_dir} already holds log {info.name!r} with origin {info.origin}, "
                f"not {origin}; choose another --data-dir or drop --origin"
            )
        click.echo(f"data directory {ctx.data_dir} already exists with log {info.name!r}")
        click.echo(f"origin:        {info.origin}")
        for k in active:
            click.echo(f"verifier key:  {k.verifier.to_string()}")
        return
    origin = origin or f"localhost/trailseal/{name}"
    data_dir, info, signer = DataDir.init(ctx.data_dir, origin, name, storage_url=storage_url)
    data_dir.close()
    if data_dir.shared:
        # The service registry shares the schema; create its tables now, as the owner.
        migrate_postgres(data_dir.url)
    click.echo(f"created data directory {ctx.data_dir} with log {info.name!r}")
    click.echo(f"origin:        {info.origin}")
    click.echo(f"verifier key:  {signer.verifier.to_string()}")
    if origin.startswith("localhost/"):
        click.echo(
            "note: the origin is the log's identity forever; for production create the log "
            "with --origin set to a name you control",
            err=True,
        )


def _read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def _prepare_line(number: int, line: bytes) -> PreparedEntry:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise EntryError(f"line {number}: not valid JSON ({e})") from e
    try:
        return prepare(record)
    except EntryError as e:
        raise EntryError(f"line {number}: {e}") from e


@cli.command()
@click.argument("input_file", metavar="[FILE]", default="-", type=click.File("rb"))
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Entries committed under one checkpoint.",
)
@click.option(
    "--receipts",
    "receipts_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write a c2sp.org/tlog-proof@v1 receipt per entry into this directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result per entry.")
@pass_context
def append(
    ctx: Context, input_file: IO[bytes], batch_size: int, receipts_dir: Path | None, as_json: bool
) -> None:
    """Append NDJSON records (one JSON object a line) from FILE or standard input.

    Each batch is durable and under a newly signed checkpoint before the next is read.
    A record with an "id" is idempotent per "source": appending it again returns the
    original index, so a failed run can simply be repeated. On a malformed line, the
    lines before it are appended and the command stops, naming the line.
    """
    total = None
    if input_file is not sys.stdin.buffer and hasattr(input_file, "name"):
        total = Path(input_file.name).stat().st_size
    counts = {"appended": 0, "duplicate": 0, "conflict": 0}
    with open_data_dir(ctx) as data_dir, progress(total, "appending") as bar:
        ledger = data_dir.ledger(ctx.log)
        if receipts_dir:
            receipts_dir.mkdir(parents=True, exist_ok=True)
        batch: list[tuple[int, PreparedEntry]] = []

        def flush() -> None:
            results = ledger.append_prepared([p for _, p in batch])
            for (number, _), r in zip(batch, results, strict=True):
                counts[r.status] += 1
                if receipts_dir and r.status == "appended":
                    text = ledger.receipt(r.index, r.tree_size).to_text()
                    (receipts_dir / f"{r.index}.tlog-proof").write_text(text)
                if as_json:
                    click.echo(
                        orjson.dumps(
                            {
                                "line": number,
                                "index": r.index,
                                "leaf_hash": b64encode(r.leaf_hash),
                                "tree_size": r.tree_size,
                                "status": r.status,
                            }
                        )
                    )
            batch.clear()

        try:
            for number, line in _read_lines(input_file):
                batch.append((number, _prepare_line(number, line)))
                bar.update(len(line))
                if len(batch) >= batch_size:
                    flush()
        except EntryError as e:
            flush()
            raise EntryError(
                f"{e}\n{counts['appended']} entries before it were appended; fix the line and "
                "run again (records with an id are not duplicated)"
            ) from e
        flush()
        size = ledger.tree_size()
    click.echo(
        f"appended {counts['appended']} entries ({counts['duplicate']} duplicates, "
        f"{counts['conflict']} conflicts); tree size {size}",
        err=as_json,
    )
    if counts["conflict"]:
        click.echo(
            "warning: conflicts are records whose source+id was already stored with other "
            "content; the original was kept",
            err=True,
        )


def _lookup(ledger: Ledger, index: int | None, event_id: str | None, source: str) -> StoredEntry:
    if (index is None) == (event_id is None):
        raise click.UsageError("give an INDEX or --id (not both)")
    if event_id is not None:
        return ledger.find(event_id, source)
    assert index is not None
    return ledger.entry(index)


_id_option = click.option("--id", "event_id", help="Find the entry by its event id instead.")
_source_option = click.option("--source", default="", help="The event's source, with --id.")


@cli.command()
@click.argument("index", type=click.IntRange(0), required=False)
@_id_option
@_source_option
@click.option("--raw", is_flag=True, help="Print the exact stored canonical bytes, nothing else.")
@pass_context
def show(ctx: Context, index: int | None, event_id: str | None, source: str, raw: bool) -> None:
    """Show an entry by INDEX or --id."""
    with open_data_dir(ctx) as data_dir:
        ledger = data_dir.ledger(ctx.log, writable=False)
        entry = _lookup(ledger, index, event_id, source)
        if raw:
            out = sys.stdout.buffer
            out.write(entry.data)
            out.flush()
            return
        click.echo(f"index:     {entry.index}")
        click.echo(f"leaf hash: {b64encode(ledger.leaf_hash(entry.index))}")
        value = parse_entry(entry.data)  # EntryError, not a traceback, if it is not JSON
        click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@cli.command()
@click.argument("index", type=click.IntRange(0), required=False)
@_id_option
@_source_option
@click.option(
    "--tree-size",
    type=click.IntRange(1),
    help="Prove into the checkpoint of this size [default: the latest].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the receipt to this file (conventionally *.tlog-proof).",
)
@pass_context
def prove(
    ctx: Context,
    index: int | None,
    event_id: str | None,
    source: str,
    tree_size: int | None,
    output: Path | None,
) -> None:
    """Print a c2sp.org/tlog-proof@v1 receipt for an entry (by INDEX or --id).

    The receipt holds the index, the RFC 9162 inclusion proof and the signed checkpoint:
    with the entry's bytes (`show --raw`) and the verifier key it verifies offline.
    """
    with open_data_dir(ctx) as data_dir:
        ledger = data_dir.ledger(ctx.log, writable=False)
        entry = _lookup(ledger, index, event_id, source)
        text = ledger.receipt(entry.index, tree_size).to_text()
    if output:
        output.write_text(text)
        click.echo(f"wrote receipt for index {entry.index} to {output}", err=True)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.option("--from", "size1", type=click.IntRange(1), help="The older tree size.")
@click.option(
    "--from-checkpoint",
    type=click.File("rb"),
    help="An older signed checkpoint you hold; checked against this log first.",
)
@click.option("--to", "size2", type=click.IntRange(1), help="The newer size [default: latest].")
@pass_context
def consistency(
    ctx: Context, size1: int | None, from_checkpoint: IO[bytes] | None, size2: int | None
) -> None:
    """Print an RFC 9162 consistency proof between two tree sizes.

    Output: a line "consistency <from> <to>", one base64 hash a line, a blank line, and
    the signed checkpoint at <to>. With --from-checkpoint, the checkpoint you hold is
    verified against the log's keys and compared with the log's own: a different root at
    the same size is proof that the log forked, and is reported as such.
    """
    if (size1 is None) == (from_checkpoint is None):
        raise click.UsageError("give --from SIZE or --from-checkpoint FILE (one of them)")
    if size1 is not None and size2 is not None and size2 < size1:
        raise click.UsageError(f"--to {size2} is smaller than --from {size1}")
    with open_data_dir(ctx) as data_dir:
        ledger = data_dir.ledger(ctx.log, writable=False)
        verifiers = ledger.verifiers()
        if from_checkpoint is not None:
            held_bytes = from_checkpoint.read()
            held = verify_checkpoint(held_bytes, verifiers, ledger.origin)
            size1 = held.tree_size
            latest = ledger.tree_size()
            if latest < size1:
                raise InconsistencyError(
                    f"the log is at size {latest}, smaller than the checkpoint you hold "
                    f"({size1}): its history was rolled back or truncated",
                    older=held_bytes.decode(),
                )
            try:
                ours = ledger.checkpoint_at(size1)
            except NotFoundError as e:
                raise InconsistencyError(
                    f"the log signed a checkpoint at size {size1} (you hold it) but no longer "
                    "has it: its checkpoints were rewritten",
                    older=held_bytes.decode(),
                ) from e
            if ours.root_hash != held.root_hash:
                raise InconsistencyError(
                    f"the checkpoint you hold for size {size1} has a different root than "
                    "this log's: the log has forked or rewritten history",
                    older=held_bytes.decode(),
                    newer=ours.to_bytes().decode(),
                )
        assert size1 is not None
        target = ledger.checkpoint_at(size2) if size2 else ledger.checkpoint()
        if target is None:
            raise NotFoundError("the log is empty")
        proof = ledger.consistency_proof(size1, target.tree_size)
        old = ledger.checkpoint_at(size1)
        verify_consistency(size1, target.tree_size, proof, old.root_hash, target.root_hash)
    click.echo(f"consistency {size1} {target.tree_size}")
    for h in proof:
        click.echo(b64encode(h))
    click.echo()
    click.echo(target.to_bytes().decode(), nl=False)


@cli.command()
@click.option(
    "--size", type=click.IntRange(1), help="The checkpoint of this size [default: latest]."
)
@pass_context
def checkpoint(ctx: Context, size: int | None) -> None:
    """Print the log's latest signed checkpoint (C2SP tlog-checkpoint note)."""
    with open_data_dir(ctx) as data_dir:
        ledger = data_dir.ledger(ctx.log, writable=False)
        signed = ledger.checkpoint_at(size) if size else ledger.checkpoint()
        if signed is None:
            raise NotFoundError(f"log {ledger.log.name!r} is empty; append something first")
    click.echo(signed.to_bytes().decode(), nl=False)


@cli.group("log")
def log_group() -> None:
    """Create and list the logs of a data directory (one per tenant and purpose)."""


@log_group.command("create")
@click.argument("name")
@click.option("--origin", required=True, help="The new log's permanent identity.")
@pass_context
def log_create(ctx: Context, name: str, origin: str) -> None:
    """Add a log NAME with its own origin, key and tree."""
    with open_data_dir(ctx) as data_dir:
        info, signer = data_dir.create_log(name, origin)
    click.echo(f"created log {info.name!r} with origin {info.origin}")
    click.echo(f"verifier key:  {signer.verifier.to_string()}")


@log_group.command("list")
@pass_context
def log_list(ctx: Context) -> None:
    """List logs with their origin and size."""
    with open_data_dir(ctx) as data_dir:
        for info in data_dir.storage.list_logs():
            latest = data_dir.storage.latest_checkpoint(info.id)
            size = latest.tree_size if latest else 0
            mark = "*" if info.name == data_dir.default_log else " "
            click.echo(f"{mark} {info.name}\t{info.origin}\tsize {size}")


@cli.group("signing-key")
def key_group() -> None:
    """Show, rotate and retire a log's checkpoint signing keys."""


@key_group.command("list")
@pass_context
def key_list(ctx: Context) -> None:
    """List the log's verifier keys, active and retired."""
    with open_data_dir(ctx) as data_dir:
        for k in data_dir.keys(data_dir.log(ctx.log)):
            state = "active" if k.active else f"retired {k.retired_at}"
            click.echo(f"{k.verifier.key_id:08x}\t{state}\tadded {k.added_at}")
            click.echo(f"  {k.verifier.to_string()}")


@key_group.command("rotate")
@pass_context
def key_rotate(ctx: Context) -> None:
    """Add a new signing key; it co-signs with the current keys from now on.

    Publish the new verifier key, then retire the old one with `signing-key retire`. Checkpoints
    signed before stay verifiable with the old key.
    """
    with open_data_dir(ctx) as data_dir:
        signer = data_dir.rotate_key(data_dir.log(ctx.log))
    click.echo(f"added key {signer.key_id:08x}; checkpoints are now co-signed")
    click.echo(f"verifier key:  {signer.verifier.to_string()}")


@key_group.command("retire")
@click.argument("key_id")
@pass_context
def key_retire(ctx: Context, key_id: str) -> None:
    """Stop signing with key KEY_ID (8 hex digits, from `signing-key list`)."""
    try:
        kid = int(key_id, 16)
    except ValueError as e:
        raise click.BadParameter("a key ID is 8 hex digits", param_hint="KEY_ID") from e
    with open_data_dir(ctx) as data_dir:
        state = data_dir.retire_key(data_dir.log(ctx.log), kid)
    click.echo(f"retired key {kid:08x} at {state.retired_at}")
