"""`python -m bitladder ...` runs the command-line tool."""

from bitladder.cli import main

raise SystemExit(main())
