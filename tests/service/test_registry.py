"""The registry's contract, run against SQLite and PostgreSQL alike.

Single-node behaviour first (tenants, logs, keys, content, poller state), then what
several nodes sharing one registry must agree on: keys, revocation within
``AUTH_CACHE_S`` (on an injected monotonic clock), and races decided once.
"""

from __future__ import annotations

import hashlib
import re
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.service.conftest import FakeMonotonic, OpenNode
from trailseal.errors import AlreadyExistsError, ConfigError, NotFoundError
from trailseal.policy.content import StoredBody
from trailseal.service.registry import (
    AUTH_CACHE_S,
    ROLES,
    SQLITE_FILE,
    ApiKeyInfo,
    Principal,
    Registry,
    TenantLog,
    open_registry,
)
from trailseal.storage.urls import StorageUrl

AT = "2025-01-01T00:00:00.000000Z"
LATER = "2025-01-02T00:00:00.000000Z"


def tenant_with_log(registry: Registry, tenant: str = "acme", log: str = "main") -> TenantLog:
    registry.create_tenant(tenant, AT)
    tlog = TenantLog(tenant, log, f"{tenant}.{log}", capture_content=False)
    registry.add_log(tlog, AT)
    return tlog


def secret_of(token: str) -> str:
    """The secret part of ``tsk_<12-char key id>_<secret>`` (the secret may hold '_')."""
    return token[len("tsk_") + 12 + 1 :]


# -- tenants and logs ---------------------------------------------------------------------


def test_tenants_are_created_once_and_listed_in_byte_order(registry: Registry) -> None:
    assert registry.tenants() == []
    for name in ("zeta", "ab", "a-b", "0x", "a"):
        registry.create_tenant(name, AT)
    # Byte order on both engines ("-" sorts before letters), whatever the collation.
    assert registry.tenants() == ["0x", "a", "a-b", "ab", "zeta"]
    assert registry.tenant_exists("a-b")
    assert not registry.tenant_exists("nope")
    with pytest.raises(AlreadyExistsError, match="tenant 'ab' already exists"):
        registry.create_tenant("ab", LATER)
    assert registry.tenants() == ["0x", "a", "a-b", "ab", "zeta"]


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "x" * 64, "sp ace", "a_b"])
def test_bad_names_are_refused(registry: Registry, name: str) -> None:
    with pytest.raises(ConfigError, match="lowercase letters"):
        registry.create_tenant(name, AT)
    registry.create_tenant("ok", AT)
    with pytest.raises(ConfigError, match="log name"):
        registry.add_log(TenantLog("ok", name, "ok.x", False), AT)
    assert registry.tenants() == ["ok"]
    assert registry.logs() == []


def test_logs_belong_to_their_tenant(registry: Registry) -> None:
    main = tenant_with_log(registry, "b", "main")
    registry.create_tenant("a", AT)
    vault = TenantLog("a", "vault", "a.vault", capture_content=True)
    registry.add_log(vault, AT)
    registry.add_log(TenantLog("a", "main", "a.main", False), AT)

    assert registry.log("a", "vault") == vault  # capture_content comes back a bool
    assert registry.logs("b") == [main]
    assert [(t.tenant, t.name) for t in registry.logs()] == [
        ("a", "main"),
        ("a", "vault"),
        ("b", "main"),
    ]
    with pytest.raises(NotFoundError, match="tenant 'a' has no log 'nope'"):
        registry.log("a", "nope")
    with pytest.raises(NotFoundError):  # another tenant's log does not exist for you
        registry.log("b", "vault")


def test_adding_a_log_twice_or_to_no_tenant_fails(registry: Registry) -> None:
    tlog = tenant_with_log(registry)
    with pytest.raises(AlreadyExistsError, match="already exists"):
        registry.add_log(tlog, LATER)
    with pytest.raises(AlreadyExistsError, match="already exists"):  # same ledger log
        registry.add_log(TenantLog("acme", "other", tlog.ledger_log, False), LATER)
    with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
        registry.add_log(TenantLog("ghost", "main", "ghost.main", False), AT)
    assert registry.logs() == [tlog]


# -- API keys ---------------------------------------------------------------------------


def test_a_key_authenticates_as_its_tenant_and_role(registry: Registry) -> None:
    registry.create_tenant("acme", AT)
    key_id, token = registry.create_key("acme", "auditor", AT, description="audit team")
    assert re.fullmatch(r"tsk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    assert token.startswith(f"tsk_{key_id}_")
    principal = registry.authenticate(token)
    assert principal == Principal(key_id, "acme", "auditor", operator=False)
    assert principal.can("content")
    assert not principal.can("write")
    assert registry.cached_principal(token) == principal

    op_id, op_token = registry.create_key("acme", "admin", AT, operator=True)
    assert registry.authenticate(op_token) == Principal(op_id, "acme", "admin", operator=True)
    assert registry.keys("acme") == [
        ApiKeyInfo(key_id, "acme", "auditor", False, "audit team", AT, None),
        ApiKeyInfo(op_id, "acme", "admin", True, "", AT, None),
    ]


def test_bad_tokens_do_not_authenticate(registry: Registry) -> None:
    registry.create_tenant("acme", AT)
    key_id, token = registry.create_key("acme", "reader", AT)
    secret = secret_of(token)
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bad in (
        "",
        "tsk_nope",
        f"tsk_{key_id}_{wrong}",
        f"tsk_{'0' * 12}_{secret}",  # an unknown key id with a real secret
        token + "x",
        token.upper(),
    ):
        assert registry.authenticate(bad) is None, bad
        assert registry.cached_principal(bad) is None


def test_only_the_secrets_hash_is_stored(registry: Registry) -> None:
    registry.create_tenant("acme", AT)
    _, token = registry.create_key("acme", "reader", AT)
    secret = secret_of(token)
    # Read through the engine-neutral layer, as the registry does.
    rows = registry._rows("SELECT secret_sha256 FROM api_keys")
    assert [bytes(r[0]) for r in rows] == [hashlib.sha256(secret.encode()).digest()]


def test_keys_need_a_known_role_and_tenant(registry: Registry) -> None:
    registry.create_tenant("acme", AT)
    with pytest.raises(ConfigError, match="role 'root' is not one of"):
        registry.create_key("acme", "root", AT)
    with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
        registry.create_key("ghost", "reader", AT)
    assert registry.keys() == []
    for role in ROLES:
        registry.create_key("acme", role, AT)
    listed = registry.keys()
    assert sorted(k.role for k in listed) == sorted(ROLES)


def test_revocation_here_is_immediate_and_happens_once(registry: Registry) -> None:
    registry.create_tenant("acme", AT)
    registry.create_tenant("other", AT)
    key_id, token = registry.create_key("acme", "ingest", AT)
    assert registry.authenticate(token) is not None  # now cached

    with pytest.raises(NotFoundError, match=f"no active API key '{key_id}'"):
        registry.revoke_key(key_id, LATER, tenant="other")  # not that tenant's key
    assert registry.authenticate(token) is not None

    registry.revoke_key(key_id, LATER, tenant="acme")
    assert registry.cached_principal(token) is None
    assert registry.authenticate(token) is None
    with pytest.raises(NotFoundError):
        registry.revoke_key(key_id, LATER)
    with pytest.raises(NotFoundError):
        registry.revoke_key("000000000000", LATER)
    (info,) = registry.keys()
    assert info.revoked_at == LATER


# -- content and poller state -------------------------------------------------------------


def test_content_is_stored_per_tenant_log_and_batches_are_atomic(registry: Registry) -> None:
    tlog = tenant_with_log(registry)
    bodies = [StoredBody(f"c_{i}", bytes([i]) * 12, b"\x00\xff" * (i + 1)) for i in range(3)]
    registry.put_contents("acme", "main", bodies, AT)
    for b in bodies:
        nonce, ciphertext = registry.get_content("acme", "main", b.ref)
        assert (type(nonce), type(ciphertext)) == (bytes, bytes)
        assert (nonce, ciphertext) == (b.nonce, b.ciphertext)
    with pytest.raises(NotFoundError, match="no content 'c_0' in log 'other'"):
        registry.get_content("acme", "other", "c_0")
    with pytest.raises(NotFoundError):
        registry.get_content("evil", tlog.name, "c_0")

    fresh = StoredBody("c_new", b"n" * 12, b"x")
    with pytest.raises(AlreadyExistsError):  # c_1 exists: nothing of the batch is kept
        registry.put_contents("acme", "main", [fresh, bodies[1]], LATER)
    with pytest.raises(NotFoundError):
        registry.get_content("acme", "main", "c_new")


def test_poller_state_is_replaced_as_a_whole(registry: Registry) -> None:
    assert registry.get_state("audit") is None
    registry.put_state("audit", {"watermark": 5, "cursor": "abc", "z": [1, 2]}, AT)
    assert registry.get_state("audit") == {"watermark": 5, "cursor": "abc", "z": [1, 2]}
    registry.put_state("audit", {"watermark": 9}, LATER)
    assert registry.get_state("audit") == {"watermark": 9}
    assert registry.get_state("other") is None


def test_everything_survives_a_restart(open_node: OpenNode) -> None:
    first = open_node()
    tlog = tenant_with_log(first)
    key_id, token = first.create_key("acme", "admin", AT, operator=True)
    first.put_contents("acme", "main", [StoredBody("c_1", b"n" * 12, b"ct")], AT)
    first.put_state("audit", {"watermark": 1}, AT)
    first.close()

    again = open_node()
    assert again.tenants() == ["acme"]
    assert again.logs() == [tlog]
    assert again.authenticate(token) == Principal(key_id, "acme", "admin", operator=True)
    assert again.get_content("acme", "main", "c_1") == (b"n" * 12, b"ct")
    assert again.get_state("audit") == {"watermark": 1}


def test_sqlite_registry_is_a_private_file_in_the_data_dir(tmp_path: Path) -> None:
    # The ledger's own file is elsewhere; the registry is always service.db beside it.
    url = StorageUrl("sqlite", path=tmp_path / "ledger" / "trailseal.db")
    registry = open_registry(url, data_dir=tmp_path)
    try:
        assert registry.path == tmp_path / SQLITE_FILE
        assert stat.S_IMODE(registry.path.stat().st_mode) == 0o600
        registry.create_tenant("acme", AT)
    finally:
        registry.close()
    again = Registry(tmp_path / SQLITE_FILE)  # what Service.open does today
    try:
        assert again.tenants() == ["acme"]
    finally:
        again.close()


# -- several nodes on one registry --------------------------------------------------------


def test_a_key_made_on_one_node_works_on_another(open_node: OpenNode) -> None:
    a, b = open_node(), open_node()
    tenant_with_log(a)
    key_id, token = a.create_key("acme", "ingest", AT)
    assert b.tenants() == ["acme"]
    assert b.log("acme", "main").ledger_log == "acme.main"
    assert b.authenticate(token) == Principal(key_id, "acme", "ingest", operator=False)
    assert [k.key_id for k in b.keys("acme")] == [key_id]


def test_a_key_revoked_on_one_node_stops_on_another_within_the_cache_time(
    open_node: OpenNode,
) -> None:
    clock_a, clock_b = FakeMonotonic(), FakeMonotonic()
    a, b = open_node(monotonic=clock_a), open_node(monotonic=clock_b)
    a.create_tenant("acme", AT)
    key_id, token = a.create_key("acme", "reader", AT)
    assert a.authenticate(token) is not None  # cached on node a until +AUTH_CACHE_S

    b.revoke_key(key_id, LATER)
    assert b.authenticate(token) is None  # at once on the revoking node
    clock_a.advance(AUTH_CACHE_S - 0.5)
    assert a.authenticate(token) is not None  # the documented window
    clock_a.advance(0.5)
    assert a.cached_principal(token) is None
    assert a.authenticate(token) is None
    clock_a.advance(3600)
    assert a.authenticate(token) is None  # a refusal is never cached as success

    # A node that never saw the key valid refuses it at once.
    assert open_node(monotonic=FakeMonotonic()).authenticate(token) is None


def test_a_found_log_is_remembered_for_the_cache_time_and_a_miss_never(
    open_node: OpenNode,
) -> None:
    clock = FakeMonotonic()
    a, b = open_node(monotonic=clock), open_node()
    with pytest.raises(NotFoundError):
        a.log("acme", "main")
    tenant_with_log(b)  # created on another node just after the miss
    queries: list[str] = []
    real_rows = a._rows
    a._rows = lambda query, *args: (queries.append(query), real_rows(query, *args))[1]  # type: ignore[method-assign]
    assert a.log("acme", "main").ledger_log == "acme.main"  # the miss was not kept
    assert a.log("acme", "main").ledger_log == "acme.main"
    assert len(queries) == 1  # asked on every request: answered from memory
    clock.advance(AUTH_CACHE_S)
    assert a.log("acme", "main").ledger_log == "acme.main"
    assert len(queries) == 2  # read again after the cache time


def run_together(workers: int, task: Callable[[int], object]) -> list[object]:
    """Run ``task(i)`` in ``workers`` threads released at once; results or exceptions."""
    barrier = threading.Barrier(workers)

    def go(i: int) -> object:
        barrier.wait()
        try:
            return task(i)
        except Exception as e:
            return e

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(go, range(workers)))


def test_concurrent_creates_of_one_tenant_have_one_winner(open_node: OpenNode) -> None:
    nodes = [open_node(), open_node()]
    for name in ("t0", "t1", "t2", "t3", "t4"):
        outcomes = run_together(6, lambda i, n=name: nodes[i % 2].create_tenant(n, AT))
        losers = [o for o in outcomes if o is not None]
        assert len(losers) == 5, outcomes
        assert all(
            isinstance(e, AlreadyExistsError) and f"tenant {name!r} already exists" in str(e)
            for e in losers
        )
    assert nodes[0].tenants() == nodes[1].tenants() == ["t0", "t1", "t2", "t3", "t4"]


def test_concurrent_revocations_of_one_key_have_one_winner(open_node: OpenNode) -> None:
    nodes = [open_node(), open_node()]
    nodes[0].create_tenant("acme", AT)
    for _ in range(3):
        key_id, token = nodes[0].create_key("acme", "reader", AT)
        outcomes = run_together(4, lambda i, k=key_id: nodes[i % 2].revoke_key(k, LATER))
        assert sum(o is None for o in outcomes) == 1, outcomes
        assert all(isinstance(o, NotFoundError) for o in outcomes if o is not None)
        assert all(n.authenticate(token) is None for n in nodes)
