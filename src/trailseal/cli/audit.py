"""Commands that check a log and hand evidence to others: verify, export, verify-bundle."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson

from trailseal.bundle import export_bundle, parse_entry, verify_bundle
from trailseal.cli.app import cli
from trailseal.cli.common import (
    EXIT_BAD_SIGNATURE,
    EXIT_INCONSISTENT,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_TAMPERED,
    Context,
    open_data_dir,
    parse_verifier_keys,
    pass_context,
    progress,
)
from trailseal.core.checkpoint import parse_signed_checkpoint
from trailseal.core.note import b64encode
from trailseal.storage.base import StoredEntry
from trailseal.tiled_log import open_source, verify_tiled_log
from trailseal.verify import BAD_SIGNATURE, INCONSISTENT, MISSING, Problem, verify_log

_key_options = [
    click.option(
        "--key",
        "keys",
        multiple=True,
        help="A trusted verifier key <name>+<key id>+<base64>; repeatable.",
    ),
    click.option(
        "--key-file",
        "key_files",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="A file of trusted verifier keys, one a line; repeatable.",
    ),
]


def _with_key_options(f: Any) -> Any:
    for option in reversed(_key_options):
        f = option(f)
    return f


def _parse_headers(headers: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip() or any(c in header for c in "\r\n"):
            raise click.BadParameter(f"{header!r} is not 'Name: value'", param_hint="--header")
        out[name.strip()] = value.strip()
    return out


def _exit_for(problems: list[Problem]) -> int:
    if not problems:
        return EXIT_OK
    kind = problems[0].kind
    if kind in BAD_SIGNATURE:
        return EXIT_BAD_SIGNATURE
    if kind in INCONSISTENT:
        return EXIT_INCONSISTENT
    if kind in MISSING:
        return EXIT_MISSING
    return EXIT_TAMPERED


def _headline(problems: list[Problem]) -> list[Problem]:
    """Signature and fork problems speak first: they say whom not to trust at all."""
    rank = dict.fromkeys(BAD_SIGNATURE + INCONSISTENT, 0)
    return sorted(problems, key=lambda p: rank.get(p.kind, 1))


def _report_problems(problems: list[Problem]) -> None:
    for p in problems[:20]:
        click.echo(f"FAIL [{p.kind}] {p.describe()}", err=True)
    if len(problems) > 20:
        click.echo(f"... and {len(problems) - 20} more problems", err=True)


@cli.command()
@click.option(
    "--tiles",
    "location",
    help="Verify a C2SP tlog-tiles log at this directory or http(s) URL instead "
    "of the local store.",
)
@_with_key_options
@click.option("--origin", help="With --tiles: the origin the checkpoint must carry.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME: VALUE",
    help="With --tiles over HTTP: a request header, e.g. 'Authorization: Bearer "
    "tsk_...' for a trailseal server; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@pass_context
def verify(
    ctx: Context,
    location: str | None,
    keys: tuple[str, ...],
    key_files: tuple[Path, ...],
    origin: str | None,
    headers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Verify a whole log, trusting only its verifier keys.

    For the local store: recompute every leaf from the stored bytes, rebuild the tree
    and its tiles, check every checkpoint's signature, and compare the roots at every
    checkpoint size (which proves the checkpoints consistent). On failure, name the
    first bad index with the expected and found hash; the exit status says what kind
    of failure it was.

    With --tiles: the same for any C2SP tlog-tiles log, given its verifier key.
    """
    pinned = True
    if location:
        verifiers = parse_verifier_keys(keys, key_files)
        source = open_source(location, _parse_headers(headers))
        raw = source.fetch("checkpoint")
        total = parse_signed_checkpoint(raw).tree_size if raw else None
        with progress(total, "verifying") as bar:
            tiled = verify_tiled_log(source, verifiers, origin, bar.update)
        problems = tiled.problems
        summary: dict[str, Any] = {
            "origin": tiled.checkpoint.origin,
            "tree_size": tiled.checkpoint.tree_size,
            "root_hash": b64encode(tiled.checkpoint.root_hash),
            "entries_checked": tiled.entries_checked,
            "tiles_checked": tiled.tiles_checked,
        }
    else:
        with open_data_dir(ctx) as data_dir:
            ledger = data_dir.ledger(ctx.log, writable=False)
            pinned = bool(keys or key_files)
            verifiers = parse_verifier_keys(keys, key_files) if pinned else ledger.verifiers()
            total = data_dir.storage.entry_count(ledger.log.id)
            with progress(total, "verifying") as bar:
                report = verify_log(ledger, verifiers, bar.update)
        problems = _headline(report.problems)
        summary = {
            "origin": report.origin,
            "tree_size": report.tree_size,
            "root_hash": b64encode(report.root_hash),
            "entries_checked": report.entries_checked,
            "checkpoints_checked": report.checkpoints_checked,
            "tiles_checked": report.tiles_checked,
            "seconds": round(report.seconds, 3),
        }
    summary["ok"] = not problems
    summary["problems"] = [
        {
            "kind": p.kind,
            "message": p.message,
            "index": p.index,
            "expected": p.expected.hex() if p.expected else None,
            "found": p.found.hex() if p.found else None,
        }
        for p in problems
    ]
    if as_json:
        click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if problems:
        _report_problems(problems)
        raise click.exceptions.Exit(_exit_for(problems))
    if not pinned:
        click.echo(
            "note: checked against the verifier keys recorded in this store; someone able "
            "to rewrite the store could plant a key. Pass --key with the published verifier "
            "key to rule that out.",
            err=True,
        )
    if not as_json:
        extra = (
            f", {summary['checkpoints_checked']} checkpoints"
            if "checkpoints_checked" in summary
            else ""
        )
        click.echo(
            f"OK {summary['origin']}: {summary['entries_checked']} entries{extra}, "
            f"{summary['tiles_checked']} tiles; tree size {summary['tree_size']}, "
            f"root {summary['root_hash']}"
        )


def _get_path(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _parse_time(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise click.BadParameter(f"{text!r} is not an RFC 3339 time", param_hint=what) from e
    if moment.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2026-01-31T00:00:00Z", param_hint=what)
    return moment


@cli.command()
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The bundle file to write (a ZIP).",
)
@click.option(
    "--from-index",
    default=0,
    type=click.IntRange(0),
    show_default=True,
    help="First index to consider.",
)
@click.option("--to-index", type=click.IntRange(0), help="Stop before this index [default: end].")
@click.option(
    "--where",
    "conditions",
    multiple=True,
    metavar="PATH=VALUE",
    help="Keep entries whose field at dotted PATH equals VALUE (as text); repeatable.",
)
@click.option("--since", help="Keep entries whose 'time' is at or after this RFC 3339 time.")
@click.option("--until", help="Keep entries whose 'time' is before this RFC 3339 time.")
@click.option(
    "--since-size",
    type=click.IntRange(1),
    help="Include the checkpoint of this size and a consistency proof from it.",
)
@click.option(
    "--chunked",
    is_flag=True,
    help="Write the v2 layout (entries in chunks): for large selections, in bounded memory.",
)
@pass_context
def export(
    ctx: Context,
    out: Path,
    from_index: int,
    to_index: int | None,
    conditions: tuple[str, ...],
    since: str | None,
    until: str | None,
    since_size: int | None,
    chunked: bool,
) -> None:
    """Write an evidence bundle for an index range or filter.

    The bundle holds the selected entries' exact bytes, a receipt (inclusion proof) for
    each into the latest checkpoint, optional older checkpoints with consistency proofs,
    the verifier keys, a manifest and a readable REPORT.md. `verify-bundle` checks it
    offline.
    """
    where: list[tuple[str, str]] = []
    for cond in conditions:
        path, sep, value = cond.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"{cond!r} is not PATH=VALUE", param_hint="--where")
        where.append((path, value))
    t0 = _parse_time(since, "--since") if since else None
    t1 = _parse_time(until, "--until") if until else None
    selection = {
        "from_index": from_index,
        "to_index": to_index,
        "where": dict(where),
        "since": since,
        "until": until,
    }
    with open_data_dir(ctx) as data_dir:
        ledger = data_dir.ledger(ctx.log, writable=False)
        end = min(to_index if to_index is not None else 1 << 62, ledger.tree_size())

        def selected() -> Any:
            for entry in data_dir.storage.read_entries(ledger.log.id, from_index, end):
                if _matches(entry, where, t0, t1):
                    yield entry

        with progress(max(end - from_index, 0), "exporting") as bar:
            summary = export_bundle(
                ledger,
                out,
                selected(),
                selection=selection,
                since_size=since_size,
                progress=bar.update,
                layout="chunks" if chunked else "entries",
            )
    click.echo(
        f"wrote {summary.entries} entries to {summary.path} "
        f"(proven into tree size {summary.tree_size})"
    )
    click.echo(
        f"check it with: trailseal verify-bundle {summary.path} --key '<the log's verifier key>'"
    )


def _matches(
    entry: StoredEntry, where: list[tuple[str, str]], t0: datetime | None, t1: datetime | None
) -> bool:
    if not where and t0 is None and t1 is None:
        return True
    value = parse_entry(entry.data)
    for path, expected in where:
        found = _get_path(value, path)
        text = found if isinstance(found, str) else orjson.dumps(found).decode()
        if text != expected:
            return False
    return _in_time_range(_get_path(value, "time"), t0, t1)


def _in_time_range(raw: Any, t0: datetime | None, t1: datetime | None) -> bool:
    """Whether an entry's ``time`` lies in [t0, t1); entries without a valid time do not."""
    if t0 is None and t1 is None:
        return True
    if not isinstance(raw, str):
        return False
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    return not ((t0 and moment < t0) or (t1 and moment >= t1))


@cli.command("verify-bundle")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_with_key_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def verify_bundle_command(
    bundle: Path, keys: tuple[str, ...], key_files: tuple[Path, ...], as_json: bool
) -> None:
    """Check an evidence bundle offline, with only the bundle and a verifier key.

    Never trust the keys inside the bundle: pass the key you obtained from the log's
    operator or a witness with --key or --key-file.
    """
    verifiers = parse_verifier_keys(keys, key_files)
    report = verify_bundle(bundle, verifiers)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "ok": report.ok,
                    "origin": report.origin,
                    "tree_size": report.tree_size,
                    "entries_checked": report.entries_checked,
                    "consistency_checked": report.consistency_checked,
                    "problems": report.problems,
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    if not report.ok:
        for p in report.problems[:20]:
            click.echo(f"FAIL {p}", err=True)
        raise click.exceptions.Exit(EXIT_TAMPERED)
    if not as_json:
        click.echo(
            f"OK {report.origin}: {report.entries_checked} entries proven into tree size "
            f"{report.tree_size}; {report.consistency_checked} consistency proofs"
        )
