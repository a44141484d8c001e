"""Signed webhooks → trailseal events (pure; no I/O, the clock's reading is passed in).

Two signature schemes:

``standard``
    Standard Webhooks 1.0 (www.standardwebhooks.com, github.com/standard-webhooks).
    Headers ``webhook-id``, ``webhook-timestamp`` (integer Unix seconds) and
    ``webhook-signature``: a space-delimited list of ``v1,<base64 HMAC-SHA256>``, several
    during a secret rotation. The signed content is ``{id}.{timestamp}.{body}``; the
    key is the base64 part of a ``whsec_<base64>`` secret, decoded. A timestamp outside
    the tolerance (either way) is refused as a possible replay.

``hmac``
    A configurable HMAC-SHA256 over the raw body, or over ``{timestamp}.{body}`` with the
    timestamp from a header (then inside a replay window), sent in one header behind an
    optional prefix, in hex or base64. GitHub's ``X-Hub-Signature-256: sha256=<hex>`` is
    ``header = "X-Hub-Signature-256"``, ``prefix = "sha256="``, ``signed = "body"``,
    ``encoding = "hex"``; the key is the secret's UTF-8 bytes.

Every comparison is constant-time and every live secret is tried, whatever matched
first, so the time taken says nothing about which secret matched. A failure raises
:class:`~trailseal.errors.AuthError` whose message names the header at fault and never
quotes the body, a signature or a secret.

A verified payload becomes one event: ``defaults`` first, then ``mapping`` (event field,
dotted, from a payload path, dotted; a numeric part indexes an array, so
``targets.0.id`` is the first target's id). ``source`` is ``webhook:<name>``, ``raw`` the
whole payload. The ``id`` is the mapped one, else the delivery id the caller passes
(``webhook-id`` for Standard Webhooks, :func:`body_digest_id` otherwise), so a
redelivery carries the same ``(source, id)`` and is stored once.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from trailseal.errors import AuthError, ConfigError
from trailseal.model.schema import EVENT_SCHEMA, schema_errors
from trailseal.settings import Secret, WebhookConfig

WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
WHSEC = "whsec_"
"""The prefix of a serialized Standard Webhooks symmetric key."""
MAX_SIGNATURES = 16
"""Most entries read from one ``webhook-signature`` header (a rotation needs two)."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,54}$")
_ACTION_PART = re.compile(r"[^A-Za-z0-9_-]+")
_RESERVED_FIELDS = {"source", "raw"}
_MISSING = object()


# -- signatures --------------------------------------------------------------------------


def standard_key(secret: Secret) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_<base64>`` decoded.

    Raises :class:`ConfigError` (never quoting the secret) when it is not base64.
    """
    text = secret.reveal().strip()
    text = text.removeprefix(WHSEC)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError("a Standard Webhooks secret is whsec_ followed by base64") from e
    if not key:
        raise ConfigError("a Standard Webhooks secret must not be empty")
    return key


def _standard_digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def standard_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """One ``webhook-signature`` entry: ``v1,<base64 HMAC-SHA256>``."""
    return "v1," + base64.b64encode(_standard_digest(key, msg_id, timestamp, body)).decode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def _check_window(timestamp: str, header: str, now_s: float, tolerance_s: float) -> None:
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise AuthError(f"{header} is not a Unix time in seconds")
    skew = now_s - int(timestamp)
    if skew > tolerance_s:
        raise AuthError(f"{header} is more than {tolerance_s:g} s old (replay?)")
    if -skew > tolerance_s:
        raise AuthError(f"{header} is more than {tolerance_s:g} s in the future")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def verify_standard(
    secrets: Sequence[Secret],
    headers: Mapping[str, str],
    body: bytes,
    now_s: float,
    tolerance_s: float,
) -> None:
    """Raise :class:`AuthError` unless a live secret signed this delivery recently.

    Every ``v1`` entry of ``webhook-signature`` is compared with every secret's
    signature; other versions (``v1a``, future ones) are ignored, as the spec allows.
    """
    msg_id = _header(headers, WEBHOOK_ID)
    timestamp = _header(headers, WEBHOOK_TIMESTAMP)
    signature = _header(headers, WEBHOOK_SIGNATURE)
    if not msg_id or not timestamp or not signature:
        raise AuthError(f"missing {WEBHOOK_ID}, {WEBHOOK_TIMESTAMP} or {WEBHOOK_SIGNATURE}")
    _check_window(timestamp.strip(), WEBHOOK_TIMESTAMP, now_s, tolerance_s)
    entries = signature.split()
    if len(entries) > MAX_SIGNATURES:
        raise AuthError(f"{WEBHOOK_SIGNATURE} lists more than {MAX_SIGNATURES} signatures")
    given = [
        _b64(value) for version, _, value in (e.partition(",") for e in entries) if version == "v1"
    ]
    if not given:
        raise AuthError(f"{WEBHOOK_SIGNATURE} has no v1 signature")
    ok = False
    for secret in secrets:
        expected = _standard_digest(standard_key(secret), msg_id, timestamp.strip(), body)
        for candidate in given:
            # No early exit: every secret meets every signature.
            ok |= hmac.compare_digest(expected, candidate)
    if not ok:
        raise AuthError(f"the {WEBHOOK_SIGNATURE} does not verify")


def hmac_signature(config: WebhookConfig, key: bytes, timestamp: str | None, body: bytes) -> str:
    """The header value a sender configured like ``config`` would send."""
    signed = body if timestamp is None else timestamp.encode() + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    encoded = digest.hex() if config.encoding == "hex" else base64.b64encode(digest).decode()
    return config.prefix + encoded


def verify_hmac(
    config: WebhookConfig,
    secrets: Sequence[Secret],
    headers: Mapping[str, str],
    body: bytes,
    now_s: float,
) -> None:
    """Raise :class:`AuthError` unless a live secret signed this delivery (``hmac``).

    With ``signed = "timestamp.body"`` the timestamp header must be within
    ``tolerance_s`` of ``now_s``; with ``body`` nothing is timed, and a captured delivery
    replays (it is then deduplicated by its body's digest).
    """
    value = _header(headers, config.header)
    if not value:
        raise AuthError(f"missing {config.header}")
    value = value.strip()
    if not value.startswith(config.prefix):
        raise AuthError(f"{config.header} does not start with the configured prefix")
    encoded = value[len(config.prefix) :]
    if config.encoding == "hex":
        try:
            given = bytes.fromhex(encoded)
        except ValueError:
            given = b""
    else:
        given = _b64(encoded)
    timestamp = None
    if config.signed == "timestamp.body":
        header = config.timestamp_header or ""
        timestamp = _header(headers, header) if header else None
        if not timestamp:
            raise AuthError(f"missing {header or 'the timestamp header'}")
        timestamp = timestamp.strip()
        _check_window(timestamp, header, now_s, config.tolerance_s)
    signed = body if timestamp is None else timestamp.encode() + b"." + body
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.reveal().encode(), signed, hashlib.sha256).digest()
        ok |= hmac.compare_digest(expected, given)
    if not ok:
        raise AuthError(f"the {config.header} signature does not verify")


def verify_delivery(
    config: WebhookConfig, headers: Mapping[str, str], body: bytes, now_s: float
) -> None:
    """Verify a delivery under the hook's scheme (raises :class:`AuthError`)."""
    if config.scheme == "standard":
        verify_standard(config.secrets, headers, body, now_s, config.tolerance_s)
    else:
        verify_hmac(config, config.secrets, headers, body, now_s)


def body_digest_id(body: bytes) -> str:
    """A delivery id from the raw body alone, so a redelivered body dedupes."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def delivery_id(config: WebhookConfig, headers: Mapping[str, str], body: bytes) -> str:
    """``webhook-id`` for Standard Webhooks (verified: it is signed), else the body's digest."""
    if config.scheme == "standard":
        msg_id = _header(headers, WEBHOOK_ID)
        if msg_id:
            return msg_id
    return body_digest_id(body)


# -- configuration -----------------------------------------------------------------------


def _schema_at(field: str) -> dict[str, Any]:
    """The event schema's node for a dotted event field; KeyError when there is none."""
    node: dict[str, Any] = EVENT_SCHEMA
    for part in field.split("."):
        kind = node.get("type")
        if kind is None and "enum" not in node and "properties" not in node:
            return {}  # any value (changes[].before / after): anything below is allowed
        if kind == "object" and part in node.get("properties", {}):
            node = node["properties"][part]
        elif kind == "array" and part.isdigit() and int(part) < node.get("maxItems", 1 << 30):
            node = node["items"]
        else:
            raise KeyError(field)
    return node


def check_config(hooks: Sequence[WebhookConfig]) -> None:
    """Refuse, with a :class:`ConfigError` naming the hook and field, a configuration
    that could never verify a delivery or produce a valid event. Run once at startup."""
    names: set[str] = set()
    for hook in hooks:
        where = f"webhook {hook.name!r}"
        _check_types(hook, where)
        if not _NAME.match(hook.name):
            raise ConfigError(
                f"{where}: a hook name is 1-55 of a-z, 0-9, _ and -, starting with a "
                "letter or digit (it becomes /hooks/<name> and source webhook:<name>)"
            )
        if hook.name in names:
            raise ConfigError(f"{where}: two hooks share this name")
        names.add(hook.name)
        _check_scheme(hook, where)
        _check_fields(hook, where)


def _check_types(hook: WebhookConfig, where: str) -> None:
    """The TOML file may hold any type where a string or number belongs."""
    for attr in ("name", "scheme", "tenant", "log", "header", "prefix", "signed", "encoding"):
        if not isinstance(getattr(hook, attr), str):
            raise ConfigError(f"{where}: {attr} must be a string")
    if hook.timestamp_header is not None and not isinstance(hook.timestamp_header, str):
        raise ConfigError(f"{where}: timestamp_header must be a string")
    tolerance: object = hook.tolerance_s
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise ConfigError(f"{where}: tolerance_s must be a number of seconds")


def _check_scheme(hook: WebhookConfig, where: str) -> None:
    if not 1 <= len(hook.secrets) <= 2:
        raise ConfigError(f"{where}: give one secret, or two during a rotation")
    if any(not s.reveal() for s in hook.secrets):
        raise ConfigError(f"{where}: a secret is empty")
    if hook.tolerance_s <= 0:
        raise ConfigError(f"{where}: tolerance_s must be positive")
    if hook.scheme == "standard":
        for s in hook.secrets:
            try:
                standard_key(s)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from e
    elif hook.scheme == "hmac":
        if not hook.header:
            raise ConfigError(f"{where}: the hmac scheme needs a header")
        if hook.signed not in ("body", "timestamp.body"):
            raise ConfigError(f"{where}: signed is 'body' or 'timestamp.body'")
        if hook.signed == "timestamp.body" and not hook.timestamp_header:
            raise ConfigError(f"{where}: signed = 'timestamp.body' needs timestamp_header")
        if hook.encoding not in ("hex", "base64"):
            raise ConfigError(f"{where}: encoding is 'hex' or 'base64'")
    else:
        raise ConfigError(f"{where}: scheme is 'standard' or 'hmac'")


def _check_fields(hook: WebhookConfig, where: str) -> None:
    for kind, pairs in (("mapping", hook.mapping), ("defaults", hook.defaults)):
        for field, value in pairs:
            if field.split(".", 1)[0] in _RESERVED_FIELDS:
                raise ConfigError(f"{where}: {kind} may not set {field!r} (trailseal sets it)")
            try:
                _schema_at(field)
            except KeyError:
                raise ConfigError(
                    f"{where}: {kind} names event field {field!r}, which the event schema "
                    "does not have"
                ) from None
            if kind == "mapping" and any(not p for p in value.split(".")):
                raise ConfigError(f"{where}: mapping {field!r} has an empty payload path")
    sample: dict[str, Any] = {}
    for field, value in hook.defaults:
        _set(sample, field, _coerce(field, value))
    sample.setdefault("action", default_action(hook.name))
    errors = schema_errors(sample)
    if errors:
        raise ConfigError(f"{where}: the defaults make an invalid event: {'; '.join(errors)}")


# -- mapping -----------------------------------------------------------------------------


def default_action(name: str) -> str:
    """The action of a delivery that maps none."""
    return f"webhook.{name}.received"


def _get(payload: Any, path: str) -> Any:
    node = payload
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _child(node: Any, part: str) -> Any:
    if isinstance(node, list):
        index = int(part)
        return node[index] if index < len(node) else None
    return node.get(part)


def _put(node: Any, part: str, value: Any) -> None:
    if isinstance(node, list):
        index = int(part)
        node.extend({} for _ in range(index + 1 - len(node)))
        node[index] = value
    else:
        node[part] = value


def _set(event: dict[str, Any], field: str, value: Any) -> None:
    """Set a dotted field, creating objects (or arrays, before a numeric part) on the way."""
    parts = field.split(".")
    node: Any = event
    for part, following in itertools.pairwise(parts):
        child = _child(node, part)
        wanted = list if following.isdigit() else dict
        if not isinstance(child, wanted):
            child = wanted()
            _put(node, part, child)
        node = child
    _put(node, parts[-1], value)


def _delete(payload: Any, path: str) -> None:
    parts = path.split(".")
    parent = _get(payload, ".".join(parts[:-1])) if len(parts) > 1 else payload
    if isinstance(parent, dict):
        parent.pop(parts[-1], None)


def _action(value: str) -> str | None:
    parts = [_ACTION_PART.sub("_", p).strip("_") for p in value.split(".")]
    action = ".".join(p for p in parts if p)[:128].strip(".")
    return action or None


def _coerce(field: str, value: Any) -> Any:
    """A payload value as the event field wants it: numbers become strings where the
    schema has a string, a numeric ``time`` is Unix seconds, an action is made legal."""
    if field == "time" and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            return value  # not Unix seconds: the schema check says so
    if field == "action":
        return _action(str(value)) if isinstance(value, str | int | float) else value
    try:
        node = _schema_at(field)
    except KeyError:
        return value  # check_config refuses such a field at startup
    if (
        node.get("type") == "string"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        return str(value)
    return value


def map_webhook(
    config: WebhookConfig, payload: Any, delivery_id: str, received_at: datetime
) -> dict[str, Any]:
    """The event one verified delivery becomes (validated later by the ingest pipeline).

    ``received_at`` is deliberately not written into the event: the ingest pipeline
    stamps ``time`` with the receipt time when no ``time`` is mapped, and a redelivery
    must build exactly the event of the first delivery to be recognized as a duplicate
    (a stamped time would make it a conflict instead).

    A payload that is not a JSON object is wrapped as ``{"payload": ...}`` (and mapping
    paths start from that wrapper). A payload path mapped into ``content`` is removed
    from ``raw``, since content leaves the leaf and only its commitment stays.
    """
    del received_at  # see above
    raw: dict[str, Any] = (
        copy.deepcopy(payload) if isinstance(payload, dict) else {"payload": copy.deepcopy(payload)}
    )
    event: dict[str, Any] = {}
    for field, value in config.defaults:
        _set(event, field, _coerce(field, value))
    for field, path in config.mapping:
        found = _get(raw, path)
        if found is _MISSING or found is None:
            continue
        coerced = _coerce(field, copy.deepcopy(found))
        if coerced is not None:
            _set(event, field, coerced)
    for field, path in config.mapping:
        if field.split(".", 1)[0] == "content":
            _delete(raw, path)
    if isinstance(event.get("content"), dict) and "body" not in event["content"]:
        del event["content"]  # no body, no content
    event.setdefault("id", delivery_id)
    event.setdefault("action", default_action(config.name))
    event["source"] = f"webhook:{config.name}"
    event["raw"] = raw
    return event
