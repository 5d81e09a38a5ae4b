"""``python -m llamaforge_trainer CONFIG [--set ...]`` — what torchrun runs on each process."""

import sys

from llamaforge_cli.main import main

sys.exit(main(["train", *sys.argv[1:]]))
