"""Errors the command line tells apart by exit code, kept free of torch so that ``part plan`` and ``part
tables`` start without loading it (``tests/test_imports.py``)."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class DeviceError(ValueError):
    """A device that does not parse, or that this machine does not have (a job's GPUs included); the message
    names the flag, key or rule, what torch sees and what to do. A refusal: exit code 2, from a command or a job."""
