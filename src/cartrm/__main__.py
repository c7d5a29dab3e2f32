"""``python -m cartrm`` runs the ``cart`` command line."""

from cartrm.cli import main

main()
