"""The result record of a vocabulary expansion."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(kw_only=True)
class ExpandReport:
    """What an expansion did, line by line of its input accounted for."""

    kind: str
    """``sentencepiece`` or ``bpe``."""
    old_size: int
    """Vocabulary size before (all ids, special tokens included)."""
    new_size: int
    """Vocabulary size after, padding included."""
    added: int = 0
    """Requested pieces added."""
    intermediates: int = 0
    """Pieces added only so that a requested piece can be built by merges."""
    already_present: int = 0
    """Requested pieces that were in the vocabulary already (skipped)."""
    duplicates: int = 0
    """Requested pieces repeated in the input (skipped)."""
    unusable: int = 0
    """Requested pieces the tokenizer can never produce (e.g. crossing a pre-token boundary)."""
    reserved: int = 0
    """Reserved padding tokens added to reach a multiple of ``pad_to``."""
    examples_unusable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
