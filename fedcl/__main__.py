"""``python -m fedcl`` is the ``fedcl`` command."""

from fedcl.cli import command

command()
