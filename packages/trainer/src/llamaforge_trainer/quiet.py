"""Third-party messages a user of the trainer cannot act on, kept off the console.

ColossalAI, bitsandbytes and transformers print hints at import or first use that are about
their optional extras (TensorNVMe, apex's fused RMSNorm on a machine without it, bitsandbytes'
CPU kernels from a hub) — on every rank, on every run. They are filtered by their message only,
so anything else still shows. ``--verbose`` shows them again.
"""

from __future__ import annotations

import logging
import warnings

KNOWN_MESSAGES = (
    r"Please install the latest tensornvme",
    r"Please install apex from source",
    r"Failed to load CPU gemm_4bit_forward",
    r"The attention mask is not set and cannot be inferred",
    r"`torch_dtype` is deprecated",
)
"""Regular expressions matched at the start of a warning's message."""


class _KnownMessages(logging.Filter):
    def __eq__(self, other: object) -> bool:  # one per handler, however often it is installed
        return isinstance(other, _KnownMessages)

    def __hash__(self) -> int:
        return hash(_KnownMessages)

    def filter(self, record: logging.LogRecord) -> bool:
        import re

        message = record.getMessage()
        return not any(re.match(p, message) for p in KNOWN_MESSAGES)


def quiet_known_messages(verbose: bool = False) -> None:
    """Filter the known third-party warnings and log lines in this process (a command's entry
    point calls this once; libraries never do). ``verbose``: change nothing."""
    if verbose:
        return
    for pattern in KNOWN_MESSAGES:
        warnings.filterwarnings("ignore", message=pattern)
    # A logger's filter sees only its own records, not its children's: filter where records
    # are printed (the root's handlers, or Python's last resort when there are none).
    known = _KnownMessages()
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and known not in handler.filters:
            handler.addFilter(known)
