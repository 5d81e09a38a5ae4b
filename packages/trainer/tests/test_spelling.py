"""share_spelling: the hook on one plain matrix trains exactly what the explicit composition
(new row = mean of its spelling's old rows + own offset, both learned) trains; in the
trainer, a new row whose piece never occurs moves by the mean change of its spelling only."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from llamaforge_trainer import StageConfig, TrainConfig, TrainError
from llamaforge_trainer.data import load_stage_data
from llamaforge_trainer.spelling import SpellingShare, read_spellings
from llamaforge_trainer.trainer import Trainer

SPELLINGS = [[0, 1], [2, 2, 3], [], [4]]  # a repeated id counts twice; [] is a special token
FIRST, DIM = 5, 3


def _loss(weight: torch.Tensor, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(0, FIRST + len(SPELLINGS), (7,), generator=g)
    target = torch.randn(7, DIM, generator=g, dtype=torch.float64)
    return ((F.embedding(ids, weight) - target) ** 2).sum() + (weight @ target.T).sin().sum()


def test_hook_trains_what_the_explicit_composition_trains():
    torch.manual_seed(0)
    start = torch.randn(FIRST + len(SPELLINGS), DIM, dtype=torch.float64)
    mean = torch.zeros(len(SPELLINGS), FIRST, dtype=torch.float64)
    for k, spelling in enumerate(SPELLINGS):
        for i in spelling:
            mean[k, i] += 1 / len(spelling)

    # reference: parameters old rows and offsets, the new rows computed from them
    old = torch.nn.Parameter(start[:FIRST].clone())
    offset = torch.nn.Parameter(start[FIRST:] - mean @ start[:FIRST])
    ref_opt = torch.optim.Adam([old, offset], lr=0.05)
    # the shared matrix: one plain parameter, the hook and the after-step move
    weight = torch.nn.Parameter(start.clone())
    share = SpellingShare(weight, FIRST, SPELLINGS)
    opt = torch.optim.Adam([weight], lr=0.05)  # per-element: old rows and offsets alike
    for step in range(4):
        ref_opt.zero_grad()
        _loss(torch.cat([old, mean @ old + offset]), step).backward()
        ref_opt.step()
        opt.zero_grad()
        _loss(weight, step).backward()
        opt.step()
        share.after_step()
        composed = torch.cat([old, mean @ old + offset]).detach()
        torch.testing.assert_close(weight.detach(), composed, rtol=1e-7, atol=1e-8)
    assert not torch.allclose(weight.detach(), start)
    share.remove()


def test_spellings_file_is_checked(tmp_path):
    with pytest.raises(TrainError, match="writes; re-run it, or set share_spelling = 'none'"):
        read_spellings(tmp_path, 10)
    (tmp_path / "expansion.json").write_text(json.dumps({"first_new": 8, "spellings": [[1]] * 3}))
    with pytest.raises(TrainError, match="3 spellings from row 8 do not fit the model's 10"):
        read_spellings(tmp_path, 10)
    (tmp_path / "expansion.json").write_text(json.dumps({"first_new": 8, "spellings": [[9]]}))
    with pytest.raises(TrainError, match="the spelling of id 8 names an id not below 8"):
        read_spellings(tmp_path, 10)


def test_unseen_piece_moves_with_its_spelling(asset, tiny_llama, packed_text, tmp_path):
    """A new id that never occurs gets no gradient of its own: with Adam and no decay its row
    moves by exactly the mean change of the old rows that spell it, and those old rows learn
    from the pieces spelled with them. The export carries expansion.json on."""
    model = tiny_llama(tmp_path / "expanded", asset("smollm2-tokenizer"), tied=False)
    config = json.loads((model / "config.json").read_text())
    rows = config["vocab_size"]
    first = rows - 2000  # some of SmolLM2's last ids occur in the packed text, most do not
    data, _ = load_stage_data([str(packed_text)])
    seen = {int(i) for row in data for i in row["input_ids"]}
    (model / "config.json").write_text(json.dumps({**config, "expanded_from_vocab_size": first}))
    spellings = [[10 + k % 7, 200 + k % 5] for k in range(rows - first)]
    (model / "expansion.json").write_text(json.dumps({"first_new": first, "spellings": spellings}))
    stage = StageConfig(
        name="s",
        data=[str(packed_text)],
        steps=2,
        lr=1e-2,
        weight_decay=0.0,
        warmup_ratio=0.0,
        share_spelling="input",
    )
    cfg = TrainConfig(
        model=str(model), output_dir=str(tmp_path / "run"), stages=[stage], precision="fp32"
    )
    result = Trainer(cfg).train()
    name = "model.embed_tokens.weight"
    before = load_file(str(model / "model.safetensors"))[name]
    after = load_file(str(result.export_dir / "model.safetensors"))[name]
    moved_old = after[:first] - before[:first]
    unseen = [k for k in range(rows - first) if first + k not in seen]
    assert 10 < len(unseen) < rows - first - 10
    for k in unseen:
        spelling = spellings[k]
        expect = moved_old[spelling].mean(0)
        got = after[first + k] - before[first + k]
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-6)
    assert float(moved_old[[10, 200]].abs().max()) > 1e-3
    assert (result.export_dir / "expansion.json").read_text() == (
        model / "expansion.json"
    ).read_text()
    with pytest.raises(TrainError, match="share_spelling runs with plugin ddp only"):
        TrainConfig(
            model=str(model), output_dir=str(tmp_path / "g"), stages=[stage], plugin="gemini"
        )
