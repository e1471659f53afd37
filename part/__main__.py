"""``python -m part``: the same command line as ``part``."""

from part.cli import main

main()
