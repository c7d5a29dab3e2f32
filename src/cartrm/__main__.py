"""``python -m cartrm`` runs the ``cart`` command line."""

from cartrm.cli import app

app(prog_name="cart")
