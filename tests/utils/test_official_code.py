"""``ovdense.utils.official_code``: files of a checkout or of a bare mirror, read the same."""

from __future__ import annotations

import subprocess

import pytest

from ovdense.utils.official_code import export_tree, is_git_dir, read_file, revision


def _git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture()
def repos(tmp_path):
    work = tmp_path / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "pkg" / "mod.py").write_text("X = 1\n")
    (work / "README.md").write_text("hello\n")
    _git("init", "-q", str(work))
    _git("-C", str(work), "add", ".")
    _git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    _git("clone", "-q", "--mirror", str(work), str(tmp_path / "mirror.git"))
    return work, tmp_path / "mirror.git"


def test_checkout_and_mirror_read_alike(repos, tmp_path):
    work, mirror = repos
    assert not is_git_dir(work) and is_git_dir(mirror)
    assert read_file(work, "pkg/mod.py") == read_file(mirror, "pkg/mod.py") == "X = 1\n"
    assert export_tree(work, tmp_path / "unused") == work.resolve()  # a work tree as it is
    assert not (tmp_path / "unused").exists()
    out = export_tree(mirror, tmp_path / "exported")
    assert (out / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert (out / "README.md").read_text() == "hello\n"
    head = _git("-C", str(work), "rev-parse", "--short", "HEAD").stdout.strip()
    assert revision(work) == revision(mirror) == head
    assert revision(tmp_path) == "?"
    with pytest.raises(subprocess.CalledProcessError):
        read_file(mirror, "absent.py")
