"""``python -m llamaforge_serve``: this package's commands without the umbrella CLI."""

import sys

from llamaforge_serve.cli import main

sys.exit(main())
