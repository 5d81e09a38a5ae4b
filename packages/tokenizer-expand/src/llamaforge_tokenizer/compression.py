"""How well tokenizers compress text: tokens per character / per UTF-8 byte, mean length."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.learn import read_corpus

Encoder = Callable[[list[str]], list[int]]


@dataclass(frozen=True, kw_only=True)
class CompressionRow:
    tokenizer: str
    label: str
    documents: int
    characters: int
    bytes: int
    tokens: int

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / max(self.characters, 1)

    @property
    def tokens_per_byte(self) -> float:
        return self.tokens / max(self.bytes, 1)

    @property
    def mean_tokens(self) -> float:
        return self.tokens / max(self.documents, 1)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "tokens_per_char": self.tokens_per_char,
            "tokens_per_byte": self.tokens_per_byte,
            "mean_tokens": self.mean_tokens,
        }


def load_encoder(tokenizer_dir: Path) -> Encoder:
    """A batch token counter for a tokenizer dir (no special tokens added).

    Uses ``tokenizer.json`` (HF tokenizers) when present, else ``tokenizer.model``.
    """
    tokenizer_dir = Path(tokenizer_dir)
    if (tokenizer_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    if (tokenizer_dir / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
        return lambda texts: [len(ids) for ids in sp.encode(texts)]
    raise TokenizerExpandError(f"{tokenizer_dir}: no tokenizer.json or tokenizer.model")


def measure(
    tokenizers: dict[str, Path], texts: dict[str, list[Path]], max_chars: int | None = None
) -> list[CompressionRow]:
    """Compression of every tokenizer on every labelled group of text files.

    Args:
        tokenizers: display name → tokenizer dir (e.g. ``{"old": ..., "new": ...}``).
        texts: label (e.g. a language) → text files, one document per line.
        max_chars: read at most this many characters per label.
    """
    rows = []
    docs = {label: read_corpus(files, max_chars) for label, files in texts.items()}
    for name, folder in tokenizers.items():
        encode = load_encoder(folder)
        for label, lines in docs.items():
            if not lines:
                raise TokenizerExpandError(f"no text for label {label!r}")
            rows.append(
                CompressionRow(
                    tokenizer=name,
                    label=label,
                    documents=len(lines),
                    characters=sum(len(x) for x in lines),
                    bytes=sum(len(x.encode("utf-8")) for x in lines),
                    tokens=sum(encode(lines)),
                )
            )
    return rows


PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")
"""Image formats :func:`plot_compression` writes (by the file's suffix)."""


def plot_compression(rows: list[CompressionRow], path: Path) -> Path:
    """A grouped bar chart of tokens per character, one group per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r.label for r in rows))
    names = list(dict.fromkeys(r.tokenizer for r in rows))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(labels), 3.6))
    for k, name in enumerate(names):
        values = [
            next(r.tokens_per_char for r in rows if r.tokenizer == name and r.label == lab)
            for lab in labels
        ]
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("tokens per character (lower is better)")
    ax.set_title("Tokenizer compression")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
