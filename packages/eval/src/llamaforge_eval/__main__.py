"""``python -m llamaforge_eval``: this package's commands without the umbrella CLI."""

import sys

from llamaforge_eval.cli import main

sys.exit(main())
