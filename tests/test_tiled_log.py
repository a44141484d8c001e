"""`trailseal verify --tiles` against a tlog-tiles log written by another implementation.

The writer below is deliberately independent of trailseal: it uses only ``hashlib``, a
naive recursive RFC 9162 MTH, the C2SP tlog-tiles layout and the C2SP signed-note format
built by hand on ``cryptography``'s Ed25519. If trailseal and this writer disagree about
any of those specs, verification of a correct log fails here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trailseal.cli import main
from trailseal.cli.common import (
    EXIT_BAD_SIGNATURE,
    EXIT_INPUT,
    EXIT_MISSING,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_STORAGE,
    EXIT_TAMPERED,
    EXIT_USAGE,
)

ORIGIN = "tiles.example.org/foreign-log"
WIDTH = 256
# 70,000 entries: 273 full level-0 tiles and a partial one of 112, a full level-1 tile
# and a partial one of 17, and a level-2 tile of width 1 (70,000 >> 16 == 1).
SIZE = 70_000
# The log also existed at this size, so stale partial tiles of it lie around as they do
# in a real log that grew (they must not confuse the verifier).
EARLIER_SIZE = 600

# -- an independent minimal tlog-tiles writer ---------------------------------------------


def _leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(leaves: list[bytes], lo: int, hi: int) -> bytes:
    """RFC 9162 §2.1.1 MTH of leaf hashes [lo, hi), recursively, by the book."""
    n = hi - lo
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[lo]
    k = 1
    while k * 2 < n:
        k *= 2
    return _node(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def _tile_path(level: int | str, index: int, width: int = WIDTH) -> str:
    """c2sp.org/tlog-tiles: 3-digit segments, all but the last prefixed with x."""
    segments = []
    while True:
        segments.append(f"{index % 1000:03d}")
        index //= 1000
        if not index:
            break
    digits = "/".join([f"x{s}" for s in reversed(segments[1:])] + [segments[0]])
    path = f"tile/{level}/{digits}"
    return path + (f".p/{width}" if width < WIDTH else "")


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]


class ForeignLog:
    """Writes a complete tlog-tiles log of the given entries into ``root``."""

    def __init__(self, root: Path, origin: str = ORIGIN) -> None:
        self.root = root
        self.origin = origin
        self.private = Ed25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes_raw()

    @property
    def verifier_key(self) -> str:
        kid = _key_id(self.origin, self.public).hex()
        encoded = base64.b64encode(b"\x01" + self.public).decode()
        return f"{self.origin}+{kid}+{encoded}"

    def _write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def publish(self, entries: list[bytes], leaves: list[bytes]) -> bytes:
        """Write bundles, hash tiles and the signed checkpoint for ``entries``."""
        size = len(entries)
        for n in range(0, (size + WIDTH - 1) // WIDTH):
            chunk = entries[n * WIDTH : (n + 1) * WIDTH]
            bundle = b"".join(len(e).to_bytes(2, "big") + e for e in chunk)
            self._write(_tile_path("entries", n, len(chunk)), bundle)
        level, span = 0, 1
        while size >= span:
            count = size // span  # complete hashes at this tile level
            hashes = [_mth(leaves, j * span, (j + 1) * span) for j in range(count)]
            for n in range(0, (count + WIDTH - 1) // WIDTH):
                chunk = hashes[n * WIDTH : (n + 1) * WIDTH]
                self._write(_tile_path(level, n, len(chunk)), b"".join(chunk))
            level, span = level + 1, span * WIDTH
        root = _mth(leaves, 0, size)
        text = f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()
        blob = _key_id(self.origin, self.public) + self.private.sign(text)
        note = text + b"\n" + f"\u2014 {self.origin} {base64.b64encode(blob).decode()}\n".encode()
        self._write("checkpoint", note)
        return root


def _entry(i: int) -> bytes:
    return json.dumps({"seq": i, "msg": f"event {i}" + "." * (i % 7)}).encode()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A foreign log of SIZE entries, written once; tests tamper with copies."""
    root = tmp_path_factory.mktemp("foreign") / "log"
    entries = [_entry(i) for i in range(SIZE)]
    leaves = [_leaf(e) for e in entries]
    log = ForeignLog(root)
    log.publish(entries[:EARLIER_SIZE], leaves[:EARLIER_SIZE])
    log.publish(entries, leaves)
    return root, log.verifier_key


@pytest.fixture
def foreign(pristine: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A private copy of the foreign log, free to tamper with."""
    root, key = pristine
    copy = tmp_path / "log"
    shutil.copytree(root, copy)
    return copy, key


def _verify(
    capsys: pytest.CaptureFixture[str], location: str, *args: str
) -> tuple[int, dict[str, object], str]:
    code = main(["verify", "--tiles", location, "--json", *args])
    captured = capsys.readouterr()
    report = json.loads(captured.out) if captured.out else {}
    return code, report, captured.err


# -- the writer itself follows the spec ----------------------------------------------------


def test_writer_paths_follow_the_spec_examples() -> None:
    # The examples of c2sp.org/tlog-tiles.
    assert _tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert _tile_path(1, 1234067, 8) == "tile/1/x001/x234/067.p/8"
    assert _tile_path("entries", 0, 1) == "tile/entries/000.p/1"
    assert _tile_path(2, 1000) == "tile/2/x001/000"


def test_writer_layout(pristine: tuple[Path, str]) -> None:
    root, _ = pristine
    assert (root / "tile/0/272").is_file()
    assert (root / "tile/0/273.p/112").is_file()
    assert (root / "tile/1/000").is_file()
    assert (root / "tile/1/001.p/17").is_file()
    assert (root / "tile/2/000.p/1").is_file()
    assert (root / "tile/entries/273.p/112").is_file()
    # Stale partials of the earlier size: 600 = 2 * 256 + 88.
    assert (root / "tile/0/002.p/88").is_file()
    assert (root / "tile/1/000.p/2").is_file()


# -- a correct foreign log verifies --------------------------------------------------------


def test_verify_directory(capsys: pytest.CaptureFixture[str], pristine: tuple[Path, str]) -> None:
    root, key = pristine
    code, report, _ = _verify(capsys, str(root), "--key", key)
    assert code == EXIT_OK
    assert report["ok"] is True
    assert report["origin"] == ORIGIN
    assert report["tree_size"] == SIZE
    assert report["entries_checked"] == SIZE
    # Level 0: 274 tiles, level 1: 2, level 2: 1.
    assert report["tiles_checked"] == 274 + 2 + 1
    entries = [_entry(i) for i in range(SIZE)]
    root_hash = _mth([_leaf(e) for e in entries], 0, SIZE)
    assert report["root_hash"] == base64.b64encode(root_hash).decode()


def test_verify_directory_human_output(
    capsys: pytest.CaptureFixture[str], pristine: tuple[Path, str], tmp_path: Path
) -> None:
    root, key = pristine
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"\n{key}\n\n")
    code = main(["verify", "--tiles", str(root), "--key-file", str(key_file), "--origin", ORIGIN])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert out.startswith(f"OK {ORIGIN}: {SIZE} entries, 277 tiles; tree size {SIZE}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """Serve a directory over HTTP on 127.0.0.1; yields a function giving its URL."""
    servers: list[http.server.ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append(server)
        threads.append(thread)
        host, port = server.server_address[:2]
        return f"http://{host!s}:{port}/"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=5)


def test_verify_over_http(
    capsys: pytest.CaptureFixture[str], pristine: tuple[Path, str], serve: Callable[[Path], str]
) -> None:
    root, key = pristine
    url = serve(root)
    code, report, _ = _verify(capsys, url, "--key", key, "--origin", ORIGIN)
    assert code == EXIT_OK
    assert report["ok"] is True
    assert report["entries_checked"] == SIZE
    # Without the trailing slash too.
    code, report, _ = _verify(capsys, url.rstrip("/"), "--key", key)
    assert code == EXIT_OK


def test_missing_tile_over_http_is_reported_as_missing(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str], serve: Callable[[Path], str]
) -> None:
    root, key = foreign
    (root / "tile/1/001.p/17").unlink()
    code, report, err = _verify(capsys, serve(root), "--key", key)
    assert code == EXIT_MISSING
    assert report["problems"][0]["kind"] == "missing"  # type: ignore[index]
    assert "tile/1/001.p/17" in err


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 511, 65_536, 65_537])
def test_verify_tile_boundaries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, size: int
) -> None:
    entries = [b"entry %d" % i for i in range(size)]
    log = ForeignLog(tmp_path / "log")
    log.publish(entries, [_leaf(e) for e in entries])
    code, report, _ = _verify(capsys, str(tmp_path / "log"), "--key", log.verifier_key)
    assert code == EXIT_OK, report
    assert report["entries_checked"] == size
    assert report["tree_size"] == size


def test_verify_log_with_thousands_of_tiles_per_level(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Past 1000 tiles a level, paths gain x-prefixed segments: tile/0/x001/000."""
    size = 1001 * WIDTH + 44
    entries = [b"%d" % i for i in range(size)]
    log = ForeignLog(tmp_path / "big")
    log.publish(entries, [_leaf(e) for e in entries])
    assert (tmp_path / "big/tile/0/x001/000").is_file()
    assert (tmp_path / "big/tile/entries/x001/001.p/44").is_file()
    code, report, _ = _verify(capsys, str(tmp_path / "big"), "--key", log.verifier_key)
    assert code == EXIT_OK
    assert report["entries_checked"] == size


# -- tampering -----------------------------------------------------------------------------


def test_flipped_byte_in_entry_bundle(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str]
) -> None:
    root, key = foreign
    bundle = root / "tile/entries/100"
    data = bytearray(bundle.read_bytes())
    # Entry 25 600 + 3: skip three entries (length prefix + data each), then the prefix.
    pos = 0
    for _ in range(3):
        pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
    original = bytes(data[pos + 2 : pos + 2 + int.from_bytes(data[pos : pos + 2], "big")])
    assert original == _entry(100 * WIDTH + 3)
    data[pos + 2 + 5] ^= 0x01
    bundle.write_bytes(bytes(data))
    tampered = original[:5] + bytes([original[5] ^ 0x01]) + original[6:]

    code, report, err = _verify(capsys, str(root), "--key", key)
    assert code == EXIT_TAMPERED
    problems = report["problems"]
    assert isinstance(problems, list)
    first = problems[0]
    assert first["kind"] == "tile"
    assert first["index"] == 100 * WIDTH + 3
    assert first["expected"] == _leaf(tampered).hex()
    assert first["found"] == _leaf(original).hex()
    assert "tile/0/100 hash 3" in first["message"]
    assert any(p["kind"] == "checkpoint-root" for p in problems)
    assert f"index:    {100 * WIDTH + 3}" in err


def test_truncated_entry_bundle(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str]
) -> None:
    root, key = foreign
    bundle = root / "tile/entries/273.p/112"
    bundle.write_bytes(bundle.read_bytes()[:-1])
    code, report, _ = _verify(capsys, str(root), "--key", key)
    assert code == EXIT_TAMPERED
    assert report["problems"][0]["kind"] == "entry"  # type: ignore[index]
    assert report["problems"][0]["index"] == 273 * WIDTH  # type: ignore[index]


def test_missing_entry_bundle(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str]
) -> None:
    root, key = foreign
    (root / "tile/entries/007").unlink()
    code, report, err = _verify(capsys, str(root), "--key", key)
    assert code == EXIT_MISSING
    assert report["problems"][0]["kind"] == "missing"  # type: ignore[index]
    assert report["problems"][0]["index"] == 7 * WIDTH  # type: ignore[index]
    assert "tile/entries/007" in err


@pytest.mark.parametrize("path", ["tile/1/000", "tile/2/000.p/1"])
def test_altered_upper_level_tile(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str], path: str
) -> None:
    root, key = foreign
    tile = root / path
    data = bytearray(tile.read_bytes())
    data[0] ^= 0xFF
    tile.write_bytes(bytes(data))
    code, report, _ = _verify(capsys, str(root), "--key", key)
    assert code == EXIT_TAMPERED
    problem = report["problems"][0]  # type: ignore[index]
    assert problem["kind"] == "tile"
    assert path in problem["message"]
    assert problem["found"] == bytes(data[:32]).hex()


def test_deleted_partial_tile_without_full_tile(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str]
) -> None:
    root, key = foreign
    (root / "tile/0/273.p/112").unlink()
    assert not (root / "tile/0/273").exists()
    code, report, err = _verify(capsys, str(root), "--key", key)
    assert code == EXIT_MISSING
    problems = report["problems"]
    assert isinstance(problems, list)
    assert [p["kind"] for p in problems] == ["missing"]
    assert "tile/0/273.p/112" in problems[0]["message"]
    assert "tile/0/273.p/112" in err


def test_full_tile_stands_in_for_a_deleted_partial(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str]
) -> None:
    """c2sp.org/tlog-tiles lets a client read a partial tile's prefix from the full tile."""
    root, key = foreign
    partial = root / "tile/0/273.p/112"
    # A full tile whose first 112 hashes are the real ones (the log grew later).
    (root / "tile/0/273").write_bytes(partial.read_bytes() + b"\x00" * 32 * (WIDTH - 112))
    partial.unlink()
    code, report, _ = _verify(capsys, str(root), "--key", key)
    assert code == EXIT_OK, report


def test_wrong_key(capsys: pytest.CaptureFixture[str], pristine: tuple[Path, str]) -> None:
    root, _ = pristine
    other = ForeignLog(root.parent / "unused")
    code = main(["verify", "--tiles", str(root), "--key", other.verifier_key])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_SIGNATURE
    assert "not signed by a trusted key" in err


def test_origin_mismatch(capsys: pytest.CaptureFixture[str], pristine: tuple[Path, str]) -> None:
    root, key = pristine
    code = main(
        ["verify", "--tiles", str(root), "--key", key, "--origin", "tiles.example.org/other"]
    )
    err = capsys.readouterr().err
    assert code == EXIT_BAD_SIGNATURE
    assert "tiles.example.org/other" in err
    assert ORIGIN in err


def test_forged_checkpoint_signature(
    capsys: pytest.CaptureFixture[str], foreign: tuple[Path, str]
) -> None:
    root, key = foreign
    note = (root / "checkpoint").read_bytes()
    text, _, sig_line = note.rpartition(b"\n\n")
    lines = text.split(b"\n")
    lines[1] = str(SIZE - 1).encode()  # claim a smaller tree under the old signature
    (root / "checkpoint").write_bytes(b"\n".join(lines) + b"\n\n" + sig_line)
    code = main(["verify", "--tiles", str(root), "--key", key])
    assert code == EXIT_BAD_SIGNATURE
    assert "does not verify" in capsys.readouterr().err


def test_unreachable_and_unusable_locations(
    capsys: pytest.CaptureFixture[str], pristine: tuple[Path, str], tmp_path: Path
) -> None:
    _, key = pristine
    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["verify", "--tiles", f"http://127.0.0.1:{port}/", "--key", key]) == EXIT_STORAGE
    assert "failed" in capsys.readouterr().err
    assert main(["verify", "--tiles", "ftp://example.org/log", "--key", key]) == EXIT_INPUT
    assert "unsupported location" in capsys.readouterr().err
    assert main(["verify", "--tiles", str(tmp_path / "nope"), "--key", key]) == EXIT_NOT_FOUND
    capsys.readouterr()
    assert main(["verify", "--tiles", str(tmp_path), "--key", key]) == EXIT_NOT_FOUND
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["verify", "--tiles", str(tmp_path)]) == EXIT_USAGE  # no key given
