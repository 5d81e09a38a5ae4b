"""``python -m llamaforge_tokenizer``: this package's commands without the umbrella CLI."""

import sys

from llamaforge_tokenizer.cli import main

sys.exit(main())
