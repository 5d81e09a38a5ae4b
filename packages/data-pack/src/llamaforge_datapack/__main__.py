"""``python -m llamaforge_datapack``: this package's commands without the umbrella CLI."""

import sys

from llamaforge_datapack.cli import main

sys.exit(main())
