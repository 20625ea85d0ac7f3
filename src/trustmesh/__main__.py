"""`python -m trustmesh` runs the CLI."""

from trustmesh.cli import main

main()
