"""Small file helpers: atomic writes, placing a file by symlink or copy.

Every writer here goes through :func:`atomic_write`, so a reader (or a re-run after a crash)
never sees a half-written file: the content is written to a temporary file in the target's
folder and renamed over the target only once complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "place_file", "temporary_sibling"]


def temporary_sibling(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """The temporary name used for ``path``: ``.<name>.<pid><suffix>`` in the same folder.

    Hidden (leading dot) so that listings of the folder skip it; the process id keeps
    concurrent processes writing the same target apart.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{suffix}")


@contextmanager
def atomic_write(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Write ``path`` atomically: yield a temporary path to write, then rename it over ``path``.

    The parent folder of ``path`` is created if needed. The temporary path (see
    :func:`temporary_sibling`) is in the same folder, so the final :func:`os.replace` is atomic;
    it is removed if the block raises (or leaves it behind in some other way)::

        with atomic_write(out / "result.json") as tmp:
            tmp.write_text(json.dumps(result))

    Args:
        path: The file to write (replaced if it exists).
        suffix: Suffix of the temporary name, e.g. ``".png"`` for writers that pick the format
            from the file name.

    Yields:
        The temporary path; the block must create it (a file or a symlink).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):  # also a dangling symlink
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def place_file(src: str | os.PathLike, dst: str | os.PathLike, mode: str) -> None:
    """Put ``src`` at ``dst`` atomically: a symlink to its absolute path, or a copy.

    Args:
        src: The existing file.
        dst: Where to place it (replaced if it exists; parent folders created).
        mode: ``"symlink"`` for a symlink to ``src`` resolved to an absolute path; anything else
            (normally ``"copy"``) copies the content.
    """
    with atomic_write(dst) as tmp:
        if mode == "symlink":
            os.symlink(Path(src).resolve(), tmp)
        else:
            shutil.copyfile(src, tmp)
