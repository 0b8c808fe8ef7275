"""`python -m foveal.configs` runs the `foveal` command (same as the console script)."""

from foveal.configs.cli import main

raise SystemExit(main())
