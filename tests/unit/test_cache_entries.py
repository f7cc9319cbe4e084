from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from quantsweep.cache import ENTRY_FILE, ArtifactCache, digest_of, folder_digest


def write_text(text: str):
    def build(folder: Path) -> None:
        (folder / "value.txt").write_text(text)

    return build


def test_a_miss_builds_and_stores_then_the_same_key_hits(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    calls: list[Path] = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "value.txt").write_text("computed")

    parts = {"model": "m", "opset": 11}
    with cache.obtain("export", parts, build, tmp_path) as (first, use):
        assert (first / "value.txt").read_text() == "computed"
        assert not use.hit and use.path == str(first)
    with cache.obtain("export", dict(reversed(parts.items())), build, tmp_path) as (second, use):
        assert use.hit and second == first and (second / "value.txt").read_text() == "computed"
    assert len(calls) == 1
    assert (first / "value.txt").stat().st_mode & 0o222 == 0  # entries are read-only
    entry = json.loads((first / ENTRY_FILE).read_text())
    assert entry["parts"] == parts and entry["key"] == use.key == first.name


def test_any_changed_key_part_misses(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    base = {"model": {"hub_id": "a", "revision": "1"}, "opset": 11, "packages": {"onnx": "1.0"}}
    variants = [
        base,
        {**base, "opset": 14},
        {**base, "model": {"hub_id": "a", "revision": "2"}},
        {**base, "packages": {"onnx": "1.1"}},
    ]
    folders = set()
    for i, parts in enumerate(variants):
        with cache.obtain("export", parts, write_text(str(i)), tmp_path) as (folder, use):
            assert not use.hit
            folders.add(folder)
    assert len(folders) == len(variants)
    # the same parts under another kind are another entry
    with cache.obtain("calibration", base, write_text("x"), tmp_path) as (_, use):
        assert not use.hit


def test_folder_digest_follows_content_not_location(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "weights.bin").write_bytes(b"\x00\x01")
        (folder / ".cache").mkdir()
        (folder / ".cache" / "lock").write_text(str(folder))  # download bookkeeping is ignored
    assert folder_digest(a) == folder_digest(b)
    (b / "weights.bin").write_bytes(b"\x00\x02")
    assert folder_digest(a) != folder_digest(b)


def test_cache_off_computes_every_time_and_leaves_nothing(tmp_path):
    cache = ArtifactCache(None)
    calls = []
    for _ in range(2):
        with cache.obtain(
            "export", {"k": 1}, lambda f: calls.append((f / "x").write_text("1")), tmp_path
        ) as (
            folder,
            use,
        ):
            assert not use.hit and use.path is None and (folder / "x").is_file()
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_failed_build_stores_nothing_and_the_next_call_builds(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")

    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("export failed")

    with (
        pytest.raises(RuntimeError, match="export failed"),
        cache.obtain("export", {"k": 1}, broken, tmp_path),
    ):
        pass
    assert [p.name for p in (tmp_path / "cache" / "export").iterdir() if not p.name.endswith(".lock")] == []
    with cache.obtain("export", {"k": 1}, write_text("ok"), tmp_path) as (folder, use):
        assert not use.hit and (folder / "value.txt").read_text() == "ok"


def _killed_writer(root: str, started: str) -> None:
    def build(folder: Path) -> None:
        (folder / "partial.txt").write_text("partial")
        Path(started).write_text("building")
        time.sleep(60)

    with ArtifactCache(Path(root)).obtain("export", {"k": "crash"}, build, Path(root)):
        pass


def test_a_writer_killed_mid_build_leaves_no_entry_and_the_next_writer_builds(tmp_path):
    context = multiprocessing.get_context("spawn")
    started = tmp_path / "started"
    writer = context.Process(target=_killed_writer, args=(str(tmp_path / "cache"), str(started)))
    writer.start()
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline and writer.is_alive()
        time.sleep(0.05)
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(30)
    kind = tmp_path / "cache" / "export"
    assert any(p.name.startswith(".") for p in kind.iterdir())  # its half-written temporary folder
    cache = ArtifactCache(tmp_path / "cache")
    assert cache.entry_path("export", digest_of({"k": "crash"})) is None
    with cache.obtain("export", {"k": "crash"}, write_text("whole"), tmp_path) as (folder, use):
        assert not use.hit and (folder / "value.txt").read_text() == "whole"
        assert not (folder / "partial.txt").exists()
    assert not any(p.name.startswith(".") for p in kind.iterdir())  # the leftover was cleared
