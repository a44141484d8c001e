"""Settings: the only module that reads the environment and ``trailseal.toml``.

Every setting is declared once, with its environment variable, ``[server]`` key in the
data directory's ``trailseal.toml``, default and help text. The environment wins over
the file, the file over the default. The CLI reference is generated from these
declarations, and a test fails when one is undocumented.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trailseal.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: environment variable, type, default and help text."""

    env: str
    kind: type
    default: Any
    help: str


SETTINGS: dict[str, Setting] = {
    "data_dir": Setting(
        "TRAILSEAL_DATA_DIR",
        str,
        "trailseal-data",
        "Data directory holding the databases, keys (0600) and trailseal.toml.",
    ),
    "log": Setting(
        "TRAILSEAL_LOG",
        str,
        "",
        "Name of the log the CLI uses; empty means the data directory's default.",
    ),
    "host": Setting("TRAILSEAL_HOST", str, "127.0.0.1", "Address `serve` listens on."),
    "port": Setting("TRAILSEAL_PORT", int, 8080, "Port `serve` listens on."),
    "origin_prefix": Setting(
        "TRAILSEAL_ORIGIN_PREFIX",
        str,
        "localhost/trailseal",
        "Prefix of new logs' origins: <prefix>/<tenant>/<log>.",
    ),
    "max_body_bytes": Setting(
        "TRAILSEAL_MAX_BODY_BYTES", int, 1 << 20, "Largest single-event request body (413 beyond)."
    ),
    "max_batch_body_bytes": Setting(
        "TRAILSEAL_MAX_BATCH_BODY_BYTES", int, 16 << 20, "Largest batch request body (413 beyond)."
    ),
    "max_batch_events": Setting(
        "TRAILSEAL_MAX_BATCH_EVENTS", int, 1000, "Most events in one batch request (422 beyond)."
    ),
    "max_future_skew_s": Setting(
        "TRAILSEAL_MAX_FUTURE_SKEW_S",
        float,
        300.0,
        "How far in the future an event's time may be (422 beyond).",
    ),
    "max_queue_entries": Setting(
        "TRAILSEAL_MAX_QUEUE_ENTRIES",
        int,
        200_000,
        "Entries waiting for a commit before 503 + Retry-After.",
    ),
    "rate_limit_rps": Setting(
        "TRAILSEAL_RATE_LIMIT_RPS",
        float,
        0.0,
        "Requests per second per API key before 429; 0 is unlimited.",
    ),
    "rate_limit_burst": Setting(
        "TRAILSEAL_RATE_LIMIT_BURST", int, 100, "Requests an API key may burst above its rate."
    ),
    "log_level": Setting(
        "TRAILSEAL_LOG_LEVEL",
        str,
        "info",
        "Level of the JSON logs on stderr (debug, info, warning, error).",
    ),
}


class Secret:
    """A secret value; its ``repr`` and ``str`` are ``***`` so it never reaches a log."""

    __slots__ = ("_missing", "_value")

    def __init__(self, value: str, *, missing: str | None = None) -> None:
        self._value = value
        self._missing = missing

    @classmethod
    def unavailable(cls, why: str) -> Secret:
        """A secret that could not be read; only using it is an error, so commands that
        do not need it (``verify``, ``export``) still run."""
        return cls("", missing=why)

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        if self._missing is not None:
            raise ConfigError(self._missing)
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class SlackApp:
    """A Slack app whose Events API requests this server accepts (``[[slack.apps]]``)."""

    name: str
    path: str
    tenant: str
    log: str
    signing_secrets: tuple[Secret, ...]
    """The live signing secrets: the current one, and the previous one during rotation."""


@dataclass(frozen=True, slots=True)
class SlackAuditConfig:
    """The Enterprise Audit Logs API poller (``[slack.audit]``)."""

    token: Secret
    """An org-owner user token with ``auditlogs:read``."""
    tenant: str = "default"
    log: str = "default"
    interval_s: float = 60.0
    backfill_from: str | None = None
    """RFC 3339 date or time to start from on the very first poll (default: now)."""
    base_url: str = "https://api.slack.com"
    limit: int = 200
    overlap_s: int = 300
    """Each cycle re-reads this far behind the watermark, for late entries (deduplicated)."""
    enabled: bool = True
    """Whether ``serve`` runs the poller in the background."""


@dataclass(frozen=True, slots=True)
class SocketModeApp:
    """A Slack app connected over Socket Mode (``[[slack.socket_mode]]``)."""

    name: str
    app_token: Secret
    """An app-level token (``xapp-``) with ``connections:write``."""
    tenant: str = "default"
    log: str = "default"
    base_url: str = "https://slack.com/api/"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """A signed webhook endpoint at ``/hooks/<name>`` (``[[hooks]]``)."""

    name: str
    secrets: tuple[Secret, ...]
    """Live secrets: the current one and, during rotation, the previous one."""
    scheme: str = "standard"
    """``standard`` (Standard Webhooks) or ``hmac`` (configurable HMAC-SHA256)."""
    tenant: str = "default"
    log: str = "default"
    header: str = "X-Hub-Signature-256"
    prefix: str = ""
    signed: str = "body"
    """``body``, or ``timestamp.body`` (timestamp, a dot, then the body)."""
    timestamp_header: str | None = None
    encoding: str = "hex"
    tolerance_s: int = 300
    mapping: tuple[tuple[str, str], ...] = ()
    """Event field (dotted) → path in the payload (dotted), e.g. ("actor.id", "sender.login")."""
    defaults: tuple[tuple[str, str], ...] = ()
    """Event field (dotted) → constant, e.g. ("action", "github.push")."""


@dataclass(frozen=True, slots=True)
class AuditRoles:
    """Who may do what in the /audit app (``[slack.audit_app.roles]``).

    Entries are Slack user ids (``U…``/``W…``) or user-group ids (``S…``, resolved with
    ``usergroups.users.list``); ``"*"`` among the requesters lets everyone request.
    """

    requesters: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditAppConfig:
    """The /audit Slack app (``[slack.audit_app]``)."""

    bot_token: Secret
    """The app's bot token (``xoxb-``)."""
    approvers_channel: str
    """Channel id where requests are posted with Approve / Deny buttons."""
    public_url: str
    """Base URL people reach this server at, for report download links."""
    roles: AuditRoles
    signing_secrets: tuple[Secret, ...] = ()
    """Copied from the ``[[slack.apps]]`` entry named by ``app``."""
    app: str = ""
    """Name of the ``[[slack.apps]]`` entry whose signing secrets verify requests."""
    socket_mode: str = ""
    """Name of a ``[[slack.socket_mode]]`` entry whose commands and interactions the app
    handles (instead of, or as well as, HTTP)."""
    tenant: str = "default"
    log: str = "default"
    request_expiry_hours: float = 72.0
    max_range_days: int = 366
    """Longest time range one request may cover."""
    download_link_hours: float = 168.0
    """How long a report download link stays valid."""
    group_cache_s: float = 60.0
    """How long user-group membership is remembered."""
    base_url: str = "https://slack.com/api/"


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings, passed down as plain values."""

    data_dir: Path
    log: str | None
    host: str
    port: int
    origin_prefix: str
    max_body_bytes: int
    max_batch_body_bytes: int
    max_batch_events: int
    max_future_skew_s: float
    max_queue_entries: int
    rate_limit_rps: float
    rate_limit_burst: int
    log_level: str
    slack_apps: tuple[SlackApp, ...] = ()
    slack_audit: SlackAuditConfig | None = None
    socket_mode_apps: tuple[SocketModeApp, ...] = ()
    hooks: tuple[WebhookConfig, ...] = ()
    audit_app: AuditAppConfig | None = None


def _convert(name: str, setting: Setting, raw: Any, where: str) -> Any:
    try:
        value = setting.kind(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {name} must be {setting.kind.__name__}, not {raw!r}") from e
    if isinstance(value, int | float) and value < 0:
        raise ConfigError(f"{where}: {name} must not be negative")
    return value


def _secret(table: dict[str, Any], key: str, env: Mapping[str, str], where: str) -> Secret | None:
    """A secret named by ``<key>_env`` (an environment variable) or ``<key>_file``."""
    if f"{key}_env" in table:
        name = str(table[f"{key}_env"])
        if name not in env:
            return Secret.unavailable(f"{where}: environment variable {name} ({key}) is not set")
        return Secret(env[name])
    if f"{key}_file" in table:
        path = Path(str(table[f"{key}_file"]))
        try:
            return Secret(path.read_text().strip())
        except OSError as e:
            return Secret.unavailable(f"{where}: cannot read {key}_file {path}: {e}")
    if key in table:
        raise ConfigError(
            f"{where}: put {key} in an environment variable ({key}_env) or a "
            f"file ({key}_file), not in trailseal.toml"
        )
    return None


def _slack_apps(config: dict[str, Any], env: Mapping[str, str]) -> tuple[SlackApp, ...]:
    apps = []
    for i, table in enumerate(config.get("slack", {}).get("apps", [])):
        where = f"trailseal.toml [[slack.apps]] #{i + 1}"
        name = str(table.get("name", "default"))
        current = _secret(table, "signing_secret", env, where)
        if current is None:
            raise ConfigError(f"{where}: set signing_secret_env or signing_secret_file")
        previous = _secret(table, "previous_signing_secret", env, where)
        default_path = "/slack/events" if i == 0 else f"/slack/{name}/events"
        apps.append(
            SlackApp(
                name=name,
                path=str(table.get("path", default_path)),
                tenant=str(table.get("tenant", "default")),
                log=str(table.get("log", "default")),
                signing_secrets=(current,) if previous is None else (current, previous),
            )
        )
    if len({a.path for a in apps}) != len(apps):
        raise ConfigError("trailseal.toml: two [[slack.apps]] share one path")
    return tuple(apps)


def _slack_audit(config: dict[str, Any], env: Mapping[str, str]) -> SlackAuditConfig | None:
    table = config.get("slack", {}).get("audit")
    if table is None:
        return None
    where = "trailseal.toml [slack.audit]"
    token = _secret(table, "token", env, where)
    if token is None:
        raise ConfigError(f"{where}: set token_env or token_file (an org-owner token)")
    known = {f.name for f in fields(SlackAuditConfig)} - {"token"}
    _no_unknown(table, known | {"token_env", "token_file"}, where)
    return SlackAuditConfig(token=token, **{k: v for k, v in table.items() if k in known})


def _socket_mode(config: dict[str, Any], env: Mapping[str, str]) -> tuple[SocketModeApp, ...]:
    out = []
    for i, table in enumerate(config.get("slack", {}).get("socket_mode", [])):
        where = f"trailseal.toml [[slack.socket_mode]] #{i + 1}"
        token = _secret(table, "app_token", env, where)
        if token is None:
            raise ConfigError(f"{where}: set app_token_env or app_token_file (an xapp- token)")
        known = {f.name for f in fields(SocketModeApp)} - {"app_token"}
        _no_unknown(table, known | {"app_token_env", "app_token_file"}, where)
        out.append(SocketModeApp(app_token=token, **{k: v for k, v in table.items() if k in known}))
    return tuple(out)


def _hooks(config: dict[str, Any], env: Mapping[str, str]) -> tuple[WebhookConfig, ...]:
    out = []
    for i, table in enumerate(config.get("hooks", [])):
        where = f"trailseal.toml [[hooks]] #{i + 1}"
        if "name" not in table:
            raise ConfigError(f"{where}: set name (the hook answers at /hooks/<name>)")
        current = _secret(table, "secret", env, where)
        if current is None:
            raise ConfigError(f"{where}: set secret_env or secret_file")
        previous = _secret(table, "previous_secret", env, where)
        plain = {f.name for f in fields(WebhookConfig)} - {"secrets", "mapping", "defaults"}
        _no_unknown(
            table,
            plain
            | {
                "secret_env",
                "secret_file",
                "previous_secret_env",
                "previous_secret_file",
                "mapping",
                "defaults",
            },
            where,
        )
        if table.get("scheme", "standard") not in ("standard", "hmac"):
            raise ConfigError(f"{where}: scheme is 'standard' or 'hmac'")
        if table.get("signed", "body") not in ("body", "timestamp.body"):
            raise ConfigError(f"{where}: signed is 'body' or 'timestamp.body'")
        if table.get("encoding", "hex") not in ("hex", "base64"):
            raise ConfigError(f"{where}: encoding is 'hex' or 'base64'")
        out.append(
            WebhookConfig(
                secrets=(current,) if previous is None else (current, previous),
                mapping=tuple((str(k), str(v)) for k, v in table.get("mapping", {}).items()),
                defaults=tuple((str(k), str(v)) for k, v in table.get("defaults", {}).items()),
                **{k: v for k, v in table.items() if k in plain},
            )
        )
    if len({h.name for h in out}) != len(out):
        raise ConfigError("trailseal.toml: two [[hooks]] share one name")
    return tuple(out)


_USER_OR_GROUP = re.compile(r"^[UWS][A-Z0-9]{2,}$")


def _role_list(table: dict[str, Any], key: str, where: str, allow_all: bool) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} is a list of Slack user or user-group ids")
    for v in value:
        if v == "*" and allow_all:
            continue
        if not _USER_OR_GROUP.match(v):
            hint = ', or "*" for everyone' if allow_all else ""
            raise ConfigError(
                f"{where}: {key} entry {v!r} is not a Slack user id (U…/W…) or user-group "
                f"id (S…){hint}"
            )
    return tuple(value)


def _check_audit_app_urls(table: dict[str, Any], where: str) -> None:
    for key in ("approvers_channel", "public_url"):
        if not table.get(key):
            raise ConfigError(f"{where}: set {key}")
    if not re.match(r"^[CG][A-Z0-9]{2,}$", str(table["approvers_channel"])):
        raise ConfigError(f"{where}: approvers_channel must be a channel id (C… or G…)")
    if not str(table["public_url"]).startswith(("https://", "http://")):
        raise ConfigError(f"{where}: public_url must start with https:// (or http://)")


def _audit_app(
    config: dict[str, Any],
    env: Mapping[str, str],
    apps: tuple[SlackApp, ...],
    sockets: tuple[SocketModeApp, ...],
) -> AuditAppConfig | None:
    table = config.get("slack", {}).get("audit_app")
    if table is None:
        return None
    where = "trailseal.toml [slack.audit_app]"
    token = _secret(table, "bot_token", env, where)
    if token is None:
        raise ConfigError(f"{where}: set bot_token_env or bot_token_file (the xoxb- bot token)")
    plain = {f.name for f in fields(AuditAppConfig)} - {"bot_token", "roles", "signing_secrets"}
    _no_unknown(table, plain | {"bot_token_env", "bot_token_file", "roles"}, where)
    roles_table = table.get("roles", {})
    _no_unknown(roles_table, {"requesters", "approvers"}, f"{where} roles")
    roles = AuditRoles(
        requesters=_role_list(roles_table, "requesters", f"{where} roles", True),
        approvers=_role_list(roles_table, "approvers", f"{where} roles", False),
    )
    if not roles.approvers:
        raise ConfigError(f"{where} roles: name at least one approver (user or user group)")
    _check_audit_app_urls(table, where)
    app_name, socket_name = str(table.get("app", "")), str(table.get("socket_mode", ""))
    secrets: tuple[Secret, ...] = ()
    if app_name:
        match = [a for a in apps if a.name == app_name]
        if not match:
            raise ConfigError(f"{where}: app {app_name!r} is not a [[slack.apps]] name")
        secrets = match[0].signing_secrets
    if socket_name and socket_name not in {s.name for s in sockets}:
        raise ConfigError(f"{where}: socket_mode {socket_name!r} is not a [[slack.socket_mode]]")
    if not app_name and not socket_name:
        raise ConfigError(
            f"{where}: set app (a [[slack.apps]] name, for HTTP) or socket_mode "
            "(a [[slack.socket_mode]] name)"
        )
    values = _positive_numbers(
        {k: v for k, v in table.items() if k in plain},
        {
            "request_expiry_hours": float,
            "max_range_days": int,
            "download_link_hours": float,
            "group_cache_s": float,
        },
        where,
    )
    return AuditAppConfig(bot_token=token, roles=roles, signing_secrets=secrets, **values)


def _positive_numbers(values: dict[str, Any], kinds: dict[str, type], where: str) -> dict[str, Any]:
    for key, kind in kinds.items():
        if key in values:
            try:
                values[key] = kind(values[key])
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: {key} must be a number") from e
            if values[key] <= 0:
                raise ConfigError(f"{where}: {key} must be positive")
    return values


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys: {', '.join(sorted(unknown))}")


def load(environ: Mapping[str, str] | None = None, data_dir: Path | None = None) -> Settings:
    """Resolve every setting from ``environ`` (the process environment by default) and
    the ``[server]`` table of ``<data dir>/trailseal.toml`` when it exists."""
    env = os.environ if environ is None else environ
    directory = data_dir or Path(env.get(SETTINGS["data_dir"].env, SETTINGS["data_dir"].default))
    document: dict[str, Any] = {}
    config = directory / "trailseal.toml"
    if config.exists():
        try:
            document = tomllib.loads(config.read_text())
        except (tomllib.TOMLDecodeError, OSError) as e:
            raise ConfigError(f"cannot read {config}: {e}") from e
    file_values: dict[str, Any] = document.get("server", {})
    values: dict[str, Any] = {}
    for name, setting in SETTINGS.items():
        if setting.env in env:
            values[name] = _convert(name, setting, env[setting.env], setting.env)
        elif name in file_values:
            values[name] = _convert(name, setting, file_values[name], f"{config} [server]")
        else:
            values[name] = setting.default
    unknown = set(file_values) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"{config} [server] has unknown settings: {', '.join(sorted(unknown))}")
    values["data_dir"] = directory
    values["log"] = values["log"] or None
    apps = _slack_apps(document, env)
    sockets = _socket_mode(document, env)
    return Settings(
        **values,
        slack_apps=apps,
        slack_audit=_slack_audit(document, env),
        socket_mode_apps=sockets,
        hooks=_hooks(document, env),
        audit_app=_audit_app(document, env, apps, sockets),
    )


def secret_from_env(name: str, environ: Mapping[str, str] | None = None) -> Secret:
    """The secret in the environment variable ``name`` (a command's ``--…-env NAME``
    option), so that a token never appears on a command line."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is not set or empty")
    return Secret(value)
