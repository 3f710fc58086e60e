"""``python -m pipectl``: the same as the ``pipectl`` command."""

from pipectl.cli import main

main()
