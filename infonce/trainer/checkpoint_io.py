"""Atomic, durable checkpoint writes for Lightning: never a half-written ``last.ckpt``.

A checkpoint is written to a temporary file next to its destination, flushed and fsync'ed,
then renamed onto the destination with ``os.replace`` (atomic on POSIX), and the directory is
fsync'ed so the rename itself survives a power cut. A process killed at any moment leaves the
old file or the new one, each complete; at worst a stray ``.tmp-*.ckpt`` file, which
Lightning ignores.

Use it from a LightningCLI config::

    trainer:
      plugins:
        - class_path: infonce.trainer.checkpoint_io.AtomicCheckpointIO
"""

import contextlib
import os
import tempfile
from typing import Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _default_file_mode() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves are atomic and fsync'ed.

    ``save_checkpoint`` writes ``torch.save(checkpoint)`` to ``tempfile.mkstemp(dir=<the
    destination's directory>, prefix=".tmp-", suffix=".ckpt")``, flushes and fsyncs it, gives
    it the permissions a new file would get, ``os.replace``-s it onto ``path`` and fsyncs the
    directory. On any exception (``KeyboardInterrupt`` included) the temporary file is removed
    and the exception re-raised; the previous checkpoint at ``path`` is untouched. Remote
    paths (``s3://``, ...) fall back to :class:`TorchCheckpointIO`. Loading and removing are
    inherited unchanged.

    Examples:
        >>> import lightning
        >>> trainer = lightning.Trainer(plugins=[AtomicCheckpointIO()], logger=False)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Atomically write ``checkpoint`` to ``path``, creating its directory if needed.

        Args:
            checkpoint: the state Lightning dumps (anything ``torch.save`` accepts).
            path: destination file; a local path or ``file://`` URL is written atomically.
            storage_options: not supported, as in :class:`TorchCheckpointIO`.

        Raises:
            TypeError: ``storage_options`` is given.
        """
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` is not supported by "
                f"`{type(self).__name__}`, got storage_options={storage_options!r}"
            )
        fs, local_path = url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path)
            return
        directory = os.path.dirname(os.path.abspath(local_path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".ckpt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
                os.chmod(tmp_path, _FILE_MODE)  # mkstemp creates 0o600
            os.replace(tmp_path, local_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_path)
            raise
        _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Persist a rename in ``directory`` (POSIX; a no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
