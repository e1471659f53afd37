"""Errors the command line tells apart by exit code, kept free of torch so that ``part plan`` and ``part
tables`` start without loading it (``tests/test_imports.py``)."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""
