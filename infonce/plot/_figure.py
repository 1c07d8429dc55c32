"""Figures without pyplot: a bare matplotlib Figure on an Agg canvas (no display, no global
backend switch), with matplotlib imported only when a figure is drawn."""

MATPLOTLIB_MISSING = 'plotting needs matplotlib: pip install "infonce[plot]"'


def new_figure(figsize: tuple[float, float]):
    """A constrained-layout ``matplotlib.figure.Figure`` of ``figsize`` inches, ready to save.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        import matplotlib  # noqa: F401  (first: a submodule cached in sys.modules is not enough)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(MATPLOTLIB_MISSING) from e
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig
