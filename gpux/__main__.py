"""``python -m gpux``: the same CLI as the ``gpux`` command, for environments without its script."""

from gpux.cli.main import main

main()
