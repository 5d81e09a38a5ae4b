"""One entry point for expansion, whatever the tokenizer kind."""

from __future__ import annotations

import json
from pathlib import Path

from llamaforge_tokenizer.bpe import expand_bpe
from llamaforge_tokenizer.outdir import check_output_dir
from llamaforge_tokenizer.pieces import DEFAULT_MAX_PIECE_CHARS, read_pieces
from llamaforge_tokenizer.report_types import ExpandReport
from llamaforge_tokenizer.segment import detect_kind
from llamaforge_tokenizer.spm import expand_sentencepiece

REPORT_FILE = "expansion_report.json"


def expand_tokenizer(
    tokenizer_dir: Path,
    pieces_file: Path,
    out_dir: Path,
    *,
    pad_to: int = 64,
    overwrite: bool = False,
    max_piece_chars: int = DEFAULT_MAX_PIECE_CHARS,
) -> ExpandReport:
    """Expand the tokenizer in ``tokenizer_dir`` with the pieces listed in ``pieces_file``.

    ``tokenizer.model`` present → sentencepiece expansion; else byte-level BPE
    (``tokenizer.json``). See :func:`expand_sentencepiece` and :func:`expand_bpe`. The report
    is also written beside the new tokenizer as ``expansion_report.json``.
    """
    check_output_dir(Path(out_dir), overwrite=overwrite, inputs=[tokenizer_dir, pieces_file])
    kind = detect_kind(tokenizer_dir)
    plist = read_pieces(pieces_file, max_chars=max_piece_chars)
    fn = expand_sentencepiece if kind == "sentencepiece" else expand_bpe
    report = fn(
        tokenizer_dir,
        plist.pieces,
        out_dir,
        pad_to=pad_to,
        overwrite=overwrite,
        duplicates=plist.duplicates,
    )
    (Path(out_dir) / REPORT_FILE).write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return report
