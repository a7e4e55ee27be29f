"""Small file helpers: atomic writes, placing a file by symlink or copy.

Every writer here goes through :func:`atomic_write`, so a reader (or a re-run after a crash)
never sees a half-written file: the content is written to a temporary file in the target's
folder and renamed over the target only once complete.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "pid_alive",
    "place_file",
    "remove_stale_temporaries",
    "temporary_sibling",
]

#: Names made by :func:`temporary_sibling`: ``.<name>.<pid><suffix>`` (suffix ``.tmp``,
#: ``.png``...); Linux pids have at most 7 digits.
_TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,7})(?P<suffix>\.[A-Za-z0-9_-]+)$")


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


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a zombie counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OSError, OverflowError):
        return False
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (not recursive).

    Only files named like :func:`temporary_sibling` names them (``.<name>.<pid><suffix>``) whose
    process no longer runs on this machine are removed; everything else is left alone. Call it
    only where no writer on another machine can be at work (e.g. under a lock of the folder).

    Returns:
        The removed paths (empty when ``folder`` does not exist).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMPORARY_NAME.match(entry.name)
        if match is None or pid_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            continue
        try:
            entry.unlink()
        except FileNotFoundError:  # removed meanwhile
            continue
        removed.append(entry)
    return removed
