"""Reading the official code of a method from a checkout or a git directory (for the parity
tools in ``tools/parity_*.py``, which run that code next to ovdense; nothing is copied into
ovdense).

A *source* is either a work tree (a checkout, with or without ``.git``) or a bare git
directory (a mirror, e.g. what a ``git clone --mirror`` leaves); its ``HEAD`` is read.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["export_tree", "is_git_dir", "read_file", "revision"]


def is_git_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bare git directory (no work tree to read files from)."""
    out = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--is-bare-repository"],
        capture_output=True,
        text=True,
    )
    return out.returncode == 0 and out.stdout.strip() == "true"


def read_file(source: str | os.PathLike, path: str) -> str:
    """The text of ``path`` in ``source``: the file of a work tree, else ``HEAD:path`` of a git
    directory."""
    root = Path(source)
    if (root / path).is_file():
        return (root / path).read_text()
    return subprocess.run(
        ["git", f"--git-dir={root}", "show", f"HEAD:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def export_tree(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """A work tree of ``source``: itself (resolved) when it has one, else its ``HEAD`` tree
    written file by file under ``dest``. Blobs a mirror lacks (e.g. large figures) are skipped
    and listed on stdout."""
    root = Path(source)
    if (root / ".git").exists() or not is_git_dir(root):
        return root.resolve()
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    tree = subprocess.run(
        ["git", "-C", str(root), "ls-tree", "-r", "-z", "HEAD"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    missing = []
    for entry in filter(None, tree.split("\0")):
        meta, name = entry.split("\t", 1)
        _, kind, sha = meta.split()
        if kind != "blob":
            continue
        blob = subprocess.run(
            ["git", "-C", str(root), "cat-file", "blob", sha], capture_output=True
        )
        if blob.returncode != 0:
            missing.append(name)
            continue
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.stdout)
    if missing:
        print(f"{source}: {len(missing)} files absent from the mirror, skipped: {missing[:5]}")
    return out


def revision(source: str | os.PathLike) -> str:
    """The short hash of ``source``'s ``HEAD`` (``"?"`` when it is not a git repository)."""
    out = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"
