"""Grow a tokenizer's vocabulary (sentencepiece and byte-level BPE), learn the new pieces from a
corpus, initialise a model's new embedding rows and report compression.

Everything but :func:`init_model` works without torch; that one needs the ``[model]`` extra and
is imported lazily.
"""

from llamaforge_tokenizer.bpe import expand_bpe
from llamaforge_tokenizer.compression import CompressionRow, measure, plot_compression
from llamaforge_tokenizer.embeddings import InitConfig, InitMethod  # (torch-free to import)
from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.expand import expand_tokenizer
from llamaforge_tokenizer.learn import Candidate, LearnConfig, learn_pieces
from llamaforge_tokenizer.pieces import read_pieces, write_pieces
from llamaforge_tokenizer.report_types import ExpandReport
from llamaforge_tokenizer.spm import expand_sentencepiece

__version__ = "0.1.0"


def init_model(*args, **kwargs):
    """Resize a model's embeddings for an expanded tokenizer; see ``embeddings.init_model``."""
    from llamaforge_tokenizer.embeddings import init_model as _init

    return _init(*args, **kwargs)


__all__ = [
    "Candidate",
    "CompressionRow",
    "ExpandReport",
    "InitConfig",
    "InitMethod",
    "LearnConfig",
    "TokenizerExpandError",
    "__version__",
    "expand_bpe",
    "expand_sentencepiece",
    "expand_tokenizer",
    "init_model",
    "learn_pieces",
    "measure",
    "plot_compression",
    "read_pieces",
    "write_pieces",
]
