"""Render the CLI reference (docs/cli.md) from the commands' own ``--help``.

Regenerate with ``python -m trailseal.cli.reference > docs/cli.md``; a test fails when
the committed file differs from what this renders, so the docs cannot drift.
"""

from __future__ import annotations

import click

from trailseal.cli import cli
from trailseal.settings import SETTINGS

_WIDTH = 96


def _walk(command: click.Command, name: str, parent: click.Context | None) -> list[tuple[str, str]]:
    # As click's make_context does: the root group's context_settings (help_option_names
    # = -h, --help) reach every subcommand. click caches each command's help option once
    # built, so rendering without them would also depend on what ran before.
    settings = {**command.context_settings, "terminal_width": _WIDTH, "max_content_width": _WIDTH}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    out = [(ctx.command_path, command.get_help(ctx))]
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                out += _walk(sub, sub_name, ctx)
    return out


def render() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# CLI reference",
        "",
        "Generated from the commands' own `--help` by "
        "`python -m trailseal.cli.reference > docs/cli.md`;",
        "a test fails when this file and the commands disagree.",
        "",
        "## Environment",
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
    ]
    for setting in SETTINGS.values():
        default = "(empty)" if setting.default == "" else setting.default
        lines.append(f"| `{setting.env}` | `{default}` | {setting.help} |")
    lines.append("")
    for path, text in _walk(cli, "trailseal", None):
        lines += [f"## `{path}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
