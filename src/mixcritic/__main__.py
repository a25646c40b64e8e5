"""``python -m mixcritic`` runs the command-line interface."""

from mixcritic.cli import main

main()
