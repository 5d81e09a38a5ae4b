"""Output-aware initialisation (``freq-out``): give each new output row the logit its piece's
frequency calls for.

The mean of the rows that spell a new piece says nothing about how often the piece occurs: a
frequent two-character word starts with a logit like that of a lone byte. Here the model reads
some of the training text (in the expanded tokenization) and we take the mean final hidden
state h̄ — the direction along which an output row sets its token's average logit. For the old
tokens, ``h̄ · w − log(count)`` is roughly constant (a unigram model inside the logits); its
median over the old tokens that occur is the offset C. Each new row is then moved along h̄ so
that ``h̄ · w = log(count) + C``: the smallest change that gives it its frequency's logit.

The old tokens a new piece replaces lose that text: in the expanded tokenization the byte
tokens that spelled a now-covered character occur far less often, yet the base model still
gives them their old logits, and the mass they keep is lost to the canonical piece (and makes
the model write characters byte by byte). Each old row whose count falls is moved along h̄ by
``log(count after / count before)`` (the count before: its count now plus one per use in the
spelling of each occurrence of a new piece) — the same unigram rule, applied to what the
expansion took away.

Only the output rows move, so tied embeddings are untied (the input rows stay the mean of
their spelling). Needs the ``[model]`` extra (torch, transformers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError

MIN_COUNT = 5
"""An old token counted fewer times than this says too little about its frequency's logit."""


def read_documents(paths: Sequence[Path], max_docs: int) -> list[str]:
    """The first ``max_docs`` non-empty lines (documents) of ``paths``, in order."""
    docs: list[str] = []
    for path in paths:
        try:
            with Path(path).open(encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        docs.append(line.rstrip("\n"))
                        if len(docs) >= max_docs:
                            return docs
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenizerExpandError(f"{path}: cannot read the corpus ({exc})") from None
    if not docs:
        raise TokenizerExpandError("freq-out: the corpus has no documents")
    return docs


def frequency_logit_shift(hbar, out_rows, counts, first_new: int):
    """The new output rows ``out_rows[first_new:]`` moved along ``hbar`` (float tensors).

    ``counts`` holds each id's count in the corpus; ids of the old vocabulary seen at least
    5 times set the offset (their median ``hbar · w − log count``); a new id never seen counts
    as seen once.
    """

    old = (counts[:first_new] >= MIN_COUNT).nonzero().squeeze(1)
    if len(old) == 0:
        raise TokenizerExpandError(f"freq-out: no old token occurs {MIN_COUNT} times in the corpus")
    offset = (out_rows[old] @ hbar - counts[old].double().log().float()).median()
    new = out_rows[first_new:]
    target = counts[first_new:].double().clamp(min=1).log().float() + offset
    return _along(hbar, new, target - new @ hbar)


def displaced_logit_shift(hbar, out_rows, counts, spellings, first_new: int):
    """The old output rows ``out_rows[:first_new]`` moved along ``hbar`` (float tensors) by
    ``log(count now / count before the expansion)`` where that count fell.

    ``counts`` holds each id's count in the corpus in the expanded tokenization; the count
    before adds, for every new id, its count times the uses of each old id in its spelling
    (``spellings[k]`` spells id ``first_new + k``). Only ids counted at least 5 times before
    move; one no longer seen counts as seen once.
    """
    import torch

    counts = counts.double()
    before = counts[:first_new].clone()
    for k, spelling in enumerate(spellings):
        for i in spelling:
            if i < first_new:
                before[i] += counts[first_new + k]
    now = counts[:first_new]
    moved = (before >= MIN_COUNT) & (now < before)
    shift = torch.zeros(first_new, dtype=torch.float64)
    shift[moved] = now[moved].clamp(min=1).log() - before[moved].log()
    return _along(hbar, out_rows[:first_new], shift.to(out_rows.dtype))


def _along(hbar, rows, logit_change):
    """``rows`` moved along ``hbar`` — the smallest change — so that each row's ``hbar · w``
    changes by its entry of ``logit_change``."""
    step = logit_change / hbar.dot(hbar)
    return rows + step.unsqueeze(1) * hbar.unsqueeze(0)


def calibrate_output_rows(
    model_dir: Path,
    first_new: int,
    corpus: Sequence[Path],
    spellings: Sequence[Sequence[int]],
    *,
    max_docs: int,
    context: int,
    hidden_docs: int = 16,
) -> None:
    """Rewrite ``model_dir`` (an expanded, mean-initialised model this package just wrote)
    with ``freq-out`` output rows; untie its embeddings where they were tied. ``spellings[k]``
    are the old ids that spell new id ``first_new + k``.

    Counts come from the first ``max_docs`` documents of ``corpus``; the mean hidden state
    from the first ``hidden_docs`` of them, ``context`` tokens each.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    docs = read_documents(corpus, max_docs)
    tok = AutoTokenizer.from_pretrained(model_dir)
    saved_dtype = json.loads((model_dir / "config.json").read_text()).get("torch_dtype")
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    dtype = getattr(torch, saved_dtype) if saved_dtype else torch.float32
    ids = [tok(d, add_special_tokens=False).input_ids for d in docs]
    vocab = model.get_output_embeddings().weight.shape[0]
    flat = torch.tensor([i for x in ids for i in x], dtype=torch.long)
    counts = torch.bincount(flat, minlength=vocab)[:vocab]
    total, n = torch.zeros(model.config.hidden_size), 0
    model.eval()
    with torch.no_grad():
        for x in ids[:hidden_docs]:
            x = x[:context]
            if not x:
                continue
            out = model(torch.tensor([x]), output_hidden_states=True)
            total += out.hidden_states[-1][0].sum(0)  # after the final norm
            n += len(x)
        hbar = total / max(n, 1)
        head = model.get_output_embeddings().weight.detach().clone()
        head[first_new:] = frequency_logit_shift(hbar, head, counts, first_new)
        head[:first_new] = displaced_logit_shift(hbar, head, counts, spellings, first_new)
    if model.config.tie_word_embeddings:
        model.config.tie_word_embeddings = False
    model.get_output_embeddings().weight = torch.nn.Parameter(head)
    for old in [*model_dir.glob("model*.safetensors"), model_dir / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)  # our own output, replaced by the shards written below
    model.to(dtype).save_pretrained(model_dir, safe_serialization=True)
