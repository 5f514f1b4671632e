"""`python -m app`: the `notifier` command (see app.cli), for where the script is not installed,
as in the Docker image."""

from app.cli import main

raise SystemExit(main())
