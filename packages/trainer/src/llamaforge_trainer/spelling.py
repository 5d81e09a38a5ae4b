"""New embedding rows that learn through the old rows that spell them.

After a vocabulary expansion each new row starts as the mean of the old rows that spell its
piece (``llamaforge vocab init-model``), and then learns only from the few times its own piece
occurs in the training text: with thousands of new pieces and a small budget, most are seen a
handful of times. Spelled with old tokens, the same text would train a few hundred shared rows
(byte and character tokens) from every occurrence of every piece.

``share_spelling`` keeps that sharing while training the new rows: each new row is treated as
``mean(old rows of its spelling) + own offset`` and both parts learn. Concretely, for an
embedding matrix ``W`` whose rows from ``first_new`` on are new and ``S`` the spelling matrix
(``S[k, i] = uses of old id i in the spelling of new id first_new + k / spelling length``):

- backward: the old rows' gradient gets ``Sᵀ · grad(new rows)`` added (the chain rule through
  the mean), so every occurrence of a piece also trains the rows that spell it;
- after each optimizer step: the new rows move by ``S · Δ(old rows)`` — a change of a shared
  row reaches every piece spelled with it.

The model stays a plain HF model (the sum is folded into the new rows at every step), so
checkpoints, resume and export are unchanged. AdamW's decoupled weight decay acts on the
folded row rather than the offset alone. The spellings come from ``expansion.json`` in the
model dir, which ``llamaforge vocab init-model`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from llamaforge_trainer.errors import TrainError

SPELLINGS_FILE = "expansion.json"
"""``{"first_new": int, "spellings": [[old ids], ...]}`` — one list per new id, in order."""


def read_spellings(model_dir: str | Path, rows: int) -> tuple[int, list[list[int]]]:
    """``first_new`` and the spelling of each new row from ``model_dir/expansion.json``,
    checked against a matrix of ``rows`` rows."""
    path = Path(model_dir) / SPELLINGS_FILE
    if not path.is_file():
        raise TrainError(
            f"{model_dir}: share_spelling needs {SPELLINGS_FILE} (the spellings of the new "
            "pieces), which `llamaforge vocab init-model` writes; re-run it, or set "
            "share_spelling = 'none'"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        first, spellings = int(data["first_new"]), data["spellings"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"{path}: not a spellings file ({exc})") from None
    if not 0 < first < rows or first + len(spellings) > rows:
        raise TrainError(
            f"{path}: {len(spellings)} spellings from row {first} do not fit the model's "
            f"{rows} embedding rows"
        )
    for k, spelling in enumerate(spellings):
        if not all(isinstance(i, int) and 0 <= i < first for i in spelling):
            raise TrainError(
                f"{path}: the spelling of id {first + k} names an id not below {first}"
            )
    return first, spellings


class SpellingShare:
    """The sharing of one embedding matrix (see the module docstring); ``remove()`` ends it."""

    def __init__(self, weight: nn.Parameter, first_new: int, spellings: list[list[int]]):
        self.weight, self.first = weight, first_new
        rows, cols, vals = [], [], []
        for k, spelling in enumerate(spellings):
            for i in spelling:
                rows.append(k)
                cols.append(i)
                vals.append(1.0 / len(spelling))
        # only the old rows some spelling uses take part: index them compactly
        self.used, local = torch.unique(torch.tensor(cols, dtype=torch.long), return_inverse=True)
        shape = (len(spellings), len(self.used))
        index = torch.stack([torch.tensor(rows, dtype=torch.long), local])
        spell = torch.sparse_coo_tensor(index, torch.tensor(vals), shape).coalesce()
        device, dtype = weight.device, weight.dtype
        self.spell = spell.to(device=device, dtype=dtype)  # new rows × used old rows
        self.spell_t = spell.t().coalesce().to(device=device, dtype=dtype)
        self.used = self.used.to(device)
        self.n_new = len(spellings)
        self.before: torch.Tensor | None = None
        self.handle = weight.register_hook(self._grad)

    def _grad(self, grad: torch.Tensor) -> torch.Tensor:
        # the weights do not change between backward and the optimizer step: keep the used
        # old rows as they are now, to see how far the step moves them
        self.before = self.weight.detach()[self.used].clone()
        new = grad[self.first : self.first + self.n_new]
        return grad.index_add(0, self.used, torch.sparse.mm(self.spell_t, new))

    @torch.no_grad()
    def after_step(self) -> None:
        """Move every new row by the mean change of the old rows that spell it."""
        if self.before is None:
            return
        change = self.weight[self.used] - self.before
        self.weight[self.first : self.first + self.n_new] += torch.sparse.mm(self.spell, change)
        self.before = None

    def remove(self) -> None:
        self.handle.remove()


def share_spelling(causal_lm: nn.Module, model_dir: str | Path, sides: str) -> list[SpellingShare]:
    """Share the learning of the new rows of the input embeddings (``sides = "input"``), the
    output embeddings (``"output"``) or both (``"both"``; one matrix when tied) with the old
    rows that spell them."""
    inp, out = causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings()
    first, spellings = read_spellings(model_dir, inp.weight.shape[0])
    chosen = {"input": [inp], "output": [out], "both": [inp, out]}[sides]
    weights = {id(m.weight): m.weight for m in chosen}  # a tied matrix is shared once
    return [SpellingShare(w, first, spellings) for w in weights.values()]
