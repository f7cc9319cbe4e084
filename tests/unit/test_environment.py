"""What a result records about the code that produced it, and about the CPU it ran on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from quantsweep.environment import code_digest, git_commit, int8_instruction_sets


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_git_commit_names_a_checkout_only_for_the_code_git_tracks(tmp_path):
    """A wheel installed into .venv/ inside a checkout is not the checkout's HEAD."""
    repo = tmp_path / "checkout"
    source = repo / "src" / "quantsweep"
    source.mkdir(parents=True)
    (source / "__init__.py").write_text('"""the package"""\n')
    (repo / ".gitignore").write_text(".venv/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")

    assert git_commit(source) == head
    installed = repo / ".venv" / "lib" / "python3" / "site-packages" / "quantsweep"
    shutil.copytree(source, installed)
    assert git_commit(installed) is None  # inside the work tree, but ignored: not the checkout's code
    (source / "__init__.py").write_text('"""changed"""\n')
    assert git_commit(source) == f"{head}-dirty"
    assert git_commit(tmp_path) is None  # no repository at all


def test_code_digest_follows_the_named_modules_source():
    scoring = code_digest(("quantsweep.tasks.token_classification.scoring",))
    assert scoring == code_digest(("quantsweep.tasks.token_classification.scoring",))
    assert scoring != code_digest(("quantsweep.export",))
    assert code_digest() not in (scoring, code_digest(("quantsweep.export",)))


def test_code_digest_of_a_package_covers_every_module_in_it(tmp_path, monkeypatch):
    """Code that moves from ``<name>.py`` into a package's modules stays in the cache key."""
    import quantsweep.environment as environment

    package = tmp_path / "quantsweep"
    shutil.copytree(environment._package_dir(), package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(environment, "_package_dir", lambda: package)
    before = code_digest(("quantsweep.tasks",))
    module = code_digest(("quantsweep.tasks.token_classification.scoring",))
    (package / "tasks" / "token_classification" / "scoring.py").write_text("# changed\n")
    assert code_digest(("quantsweep.tasks",)) != before
    assert code_digest(("quantsweep.tasks.token_classification.scoring",)) != module
    with pytest.raises(FileNotFoundError, match=r"quantsweep\.evaluate"):
        code_digest(("quantsweep.evaluate",))


def test_instruction_sets_are_read_from_the_cpu_flags():
    avx2_only = frozenset({"sse4_2", "avx", "avx2", "fma"})
    vnni = avx2_only | {"avx512f", "avx512bw", "avx512_vnni"}
    assert int8_instruction_sets(avx2_only) == ["AVX2"]
    assert int8_instruction_sets(vnni) == ["AVX2", "AVX-512F", "AVX-512BW", "AVX512-VNNI"]
    assert int8_instruction_sets(frozenset({"avx512vnni", "avx2"})) == ["AVX2", "AVX512-VNNI"]
    assert int8_instruction_sets(frozenset({"asimd", "asimddp"})) == ["NEON", "dot product"]
