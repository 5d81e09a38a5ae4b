"""``python -m llamaforge_trainer``: this package's commands without the umbrella CLI."""

import sys

from llamaforge_trainer.cli import main

sys.exit(main())
