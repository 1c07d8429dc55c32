"""Atomic, durable checkpoint writes for Lightning: never a half-written ``last.ckpt``.

Local saves go through :func:`infonce._files.atomic_write`: a temporary file next to the
destination, flushed and fsync'ed, renamed onto it with ``os.replace`` (atomic on POSIX), and
the directory fsync'ed so the rename itself survives a power cut. A process killed at any
moment leaves the old file or the new one, each complete; at worst a stray ``.tmp-*`` file,
which Lightning ignores.

``train.py`` adds it to every run whose config names no other checkpoint IO; in a plain
``lightning.Trainer``::

    trainer = lightning.Trainer(plugins=[AtomicCheckpointIO()])
"""

from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from infonce._files import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves are atomic and fsync'ed.

    ``save_checkpoint`` writes ``torch.save(checkpoint)`` through
    :func:`infonce._files.atomic_write`: a temporary ``.tmp-<name>-*`` file in the
    destination's directory, fsync'ed, given the permissions a new file would get, renamed
    onto ``path``, the directory fsync'ed. On any exception (``KeyboardInterrupt`` included)
    the temporary file is removed and the exception re-raised; the previous checkpoint at
    ``path`` is untouched. Remote
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
        atomic_torch_save(checkpoint, local_path)
