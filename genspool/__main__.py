"""``python -m genspool`` runs the CLI."""

from genspool.cli import main

main()
