"""Figures without pyplot: a bare matplotlib Figure on an Agg canvas (no display, no global
backend switch), with matplotlib imported only when a figure is drawn, and saved atomically
to exactly the path asked for.

The output rule: the path must end in a suffix matplotlib writes (``.png``, ``.pdf``,
``.svg``, ...; the format follows it), so the file written is the file named (matplotlib
would append ``.png`` to a name without one); an existing directory is refused; a missing
parent directory is created; an existing file is replaced, atomically. Each public drawing
function checks its output once, with :func:`check_output`, before it draws; :func:`save`
writes to that checked path.
"""

import io
from os import PathLike
from pathlib import Path

from infonce._files import atomic_write

MATPLOTLIB_MISSING = 'plotting needs matplotlib: pip install "infonce[plot]"'


class OutputError(ValueError):
    """An output path without the suffix of an image format matplotlib writes."""


def _canvas_class():
    try:
        import matplotlib  # noqa: F401  (first: a submodule cached in sys.modules is not enough)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as e:
        raise ImportError(MATPLOTLIB_MISSING) from e
    return FigureCanvasAgg


def new_figure(figsize: tuple[float, float]):
    """A constrained-layout ``matplotlib.figure.Figure`` of ``figsize`` inches, ready to save.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    canvas = _canvas_class()
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    canvas(fig)
    return fig


def check_output(output: str | PathLike) -> Path:
    """``output`` as a Path, if an image can be written there (see the module docstring).

    Raises:
        ImportError: matplotlib is not installed.
        IsADirectoryError: ``output`` is an existing directory.
        OutputError: (a ValueError) its suffix is not an image format matplotlib writes; the
            message lists them.
    """
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"output {output} is a directory; give an image file, e.g. "
                                f"{output / 'figure.png'}")  # fmt: skip
    formats = _canvas_class().get_supported_filetypes()
    if output.suffix.lower().lstrip(".") not in formats:
        why = f"ends in {output.suffix!r}" if output.suffix else "has no suffix"
        raise OutputError(
            f"output {output} {why}; name the image with one of the suffixes matplotlib writes: "
            + ", ".join(f".{f}" for f in sorted(formats))
        )
    return output


def save(fig, output: Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``output``, a path :func:`check_output` returned, in the format of its
    suffix, atomically; returns the path.

    Raises:
        OSError: the file cannot be written; the message is ``cannot write OUTPUT: reason`` and
            a previous file there is left whole.
    """
    buffer = io.BytesIO()  # drawn first, so a failed write is a plain OSError
    fig.savefig(buffer, format=output.suffix.lower().lstrip("."), dpi=dpi)
    try:
        atomic_write(output, lambda f: f.write(buffer.getbuffer()))
    except OSError as err:
        raise OSError(f"cannot write {output}: {err.strerror or err}") from err
    return output
