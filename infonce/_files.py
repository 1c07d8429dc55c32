"""Files read and written so that nothing is half-written and every failure names the file.

- :func:`atomic_write`: the one way this package writes a file it must not lose (checkpoints,
  exported backbones, the decoded-data cache, saved logits): a temporary file beside the
  destination, flushed and fsync'ed, renamed onto it (``os.replace``, atomic on POSIX), then
  the directory fsync'ed. A process killed at any moment leaves the old file or the new one,
  each whole; a failed write (a full disk) removes its temporary file and leaves the old one.
- :func:`load_torch_file`: ``torch.load(weights_only=True)`` whose errors say, in one line,
  which file and what is wrong with it (missing, a directory, empty, truncated, not written by
  ``torch.save``, holding Python objects other than tensors), instead of an unpickler's or
  miniz's traceback.
"""

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["UnreadableFileError", "atomic_torch_save", "atomic_write", "load_torch_file"]


class UnreadableFileError(ValueError):
    """A file exists but cannot be read as what it should be; the message names it and why."""


def _default_file_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then move it onto ``path`` atomically.

    The destination's directory is created if needed. The new file gets the permissions a
    plain ``open(path, "wb")`` would give it (``mkstemp`` creates 0o600).

    Args:
        path: the destination file; an existing file there is replaced only once the new one
            is complete and on disk.
        write: writes the content to the open file object it is given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        IsADirectoryError: ``path`` is a directory.
        OSError: the directory cannot be created or written (no permission, a full disk);
            the temporary file is removed and the previous file at ``path`` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file to write")
    directory = path.absolute().parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            recorder = _WriteErrors(f)
            try:
                write(recorder)
            except Exception as err:  # torch.save turns a failed write into a RuntimeError
                if recorder.error is not None and recorder.error is not err:
                    raise recorder.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_directory(directory)
    return path


class _WriteErrors:
    """A binary file that remembers the first OSError of its writes (a full disk), so that the
    system's reason reaches the user even when a writer (``torch.save``'s zip writer) replaces
    it with an error of its own."""

    def __init__(self, file: IO[bytes]):
        self._file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):  # flush, tell, seek, fileno, ...
        return getattr(self._file, name)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`; errors as there."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _fsync_directory(directory: Path) -> None:
    """Persist a rename in ``directory`` (POSIX; a no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_torch_file(path: str | os.PathLike, what: str = "torch file", mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with errors in one line.

    Args:
        path: the file.
        what: what the file should be, for messages (``"checkpoint"``, ``"logits file"``).
        mmap: map the tensors' storage instead of reading it (cheap for a large checkpoint
            that is only inspected; needs a file written by ``torch.save``'s zip format).

    Returns:
        What ``torch.load`` returns.

    Raises:
        FileNotFoundError: nothing at ``path``.
        UnreadableFileError: ``path`` is a directory, cannot be read, is empty, is not a
            complete ``torch.save`` file (random bytes, truncated, a text file), or holds
            objects ``weights_only=True`` refuses (a pickled module or class).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        raise UnreadableFileError(f"{what} {path} is a directory, not a file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise UnreadableFileError(f"cannot read {what} {path}: {err.strerror}") from None
    if size == 0:
        raise UnreadableFileError(f"{what} {path} is empty (0 bytes)")
    try:
        with path.open("rb") as f:
            head = f.read(4)
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before an error
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as err:
        raise UnreadableFileError(f"cannot read {what} {path}: {err.strerror or err}") from None
    except Exception as err:  # unpickler, zip reader and storage errors vary with the content
        raise UnreadableFileError(f"cannot read {what} {path}: {_why(err, head)}") from None


_ZIP, _PICKLE = b"PK\x03\x04", 0x80  # torch.save's zip format; a pickle of protocol >= 2


def _why(err: Exception, head: bytes) -> str:
    """One line for what ``torch.load`` found wrong with a file that starts with ``head``."""
    text = str(err)
    if head.startswith(_ZIP):
        if "failed finding central directory" in text or "zip archive" in text:
            return "a torch.save file cut short (truncated: an interrupted copy or download?)"
        if "Weights only load failed" in text:
            return (
                "it holds Python objects other than tensors and plain containers (a pickled "
                "module or class?), which torch.load(weights_only=True) refuses to run"
            )
        return f"a damaged torch.save file ({type(err).__name__})"
    if head[:1] == bytes([_PICKLE]):
        return (
            "a Python pickle that torch.load(weights_only=True) refuses: not written by "
            "torch.save, or holding objects other than tensors and plain containers (a module?)"
        )
    return f"not a file written by torch.save (it starts with {head!r})"
