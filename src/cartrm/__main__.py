"""``python -m cartrm`` (also ``accelerate launch -m cartrm train …``)."""

from cartrm.cli import app

app(prog_name="cart")
