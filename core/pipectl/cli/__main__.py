"""``python -m pipectl.cli``: the same as the ``pipectl`` command."""

from pipectl.cli import main

main()
