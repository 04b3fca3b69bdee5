"""Writing a file so that a crash at any moment leaves the old file or the complete new one."""
from __future__ import annotations

import json
import os
import tempfile


def fsync_dir(directory) -> None:
    """Make renames inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """Call write(f) on a temp file next to `path`, fsync it, then os.replace it onto `path`.

    A crash at any moment leaves `path` as it was or as written in full; a stray
    '.<name>.*.tmp' file may be left behind (harmless, and checkpoint saves clean them up).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)     # mkstemp makes the file private (0600); a saved file is for sharing
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def write_text(path, text: str) -> None:
    """Write a text file atomically (atomic_write with UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path, obj, indent: int = 2) -> None:
    """Write a JSON file atomically: a reader never sees half of it."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")
