"""new_input_lr / new_output_lr: the rows a vocabulary expansion added step at their own rate.

The reference is the trainer's own optimizer groups: with ``embedding_lr`` the whole matrix
steps at that rate, so after one step the new rows of a run with ``new_input_lr = r`` must be
those of a run with ``embedding_lr = r``, and everything else that of a plain run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llamaforge_trainer import StageConfig, TrainConfig, TrainError
from llamaforge_trainer.trainer import Trainer

IN, OUT = "model.embed_tokens.weight", "lm_head.weight"


def _expanded(src: Path, dst: Path, new_rows: int = 2000) -> tuple[Path, int]:
    """A copy of ``src`` marked as expanded: its last ``new_rows`` rows are the new ones."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    first = config["vocab_size"] - new_rows
    (dst / "config.json").write_text(json.dumps({**config, "expanded_from_vocab_size": first}))
    return dst, first


def _train(tmp_path: Path, name: str, model: Path, data: Path, **stage) -> dict:
    stage = {
        "name": "s",
        "data": [str(data)],
        "steps": 1,
        "lr": 1e-4,
        "warmup_ratio": 0.0,
        "weight_decay": 0.1,
        "micro_batch_size": 2,
        "grad_accum": 2,
        **stage,
    }
    cfg = TrainConfig(
        model=str(model),
        output_dir=str(tmp_path / name),
        stages=[StageConfig(**stage)],
        precision="fp32",
    )
    Trainer(cfg).train()
    return load_file(str(tmp_path / name / "export" / "model.safetensors"))


@pytest.fixture(scope="module")
def untied(asset, tiny_llama, tmp_path_factory) -> Path:
    return tiny_llama(
        tmp_path_factory.mktemp("untied") / "model", asset("smollm2-tokenizer"), tied=False
    )


@pytest.mark.slow
def test_tied_new_rows_take_their_rate_and_nothing_else_moves(tiny_model, packed_text, tmp_path):
    model, first = _expanded(tiny_model, tmp_path / "expanded")
    own = _train(tmp_path, "own", model, packed_text, new_input_lr=1e-2)
    whole = _train(tmp_path, "whole", model, packed_text, embedding_lr=1e-2)
    plain = _train(tmp_path, "plain", model, packed_text)
    torch.testing.assert_close(own[IN][first:], whole[IN][first:])
    torch.testing.assert_close(own[IN][:first], plain[IN][:first], rtol=0, atol=0)
    for name in plain:
        if name != IN:
            torch.testing.assert_close(own[name], plain[name], rtol=0, atol=0)
    before = load_file(str(model / "model.safetensors"))[IN]
    assert (own[IN][first:] - before[first:]).abs().max() > 50 * (
        plain[IN][first:] - before[first:]
    ).abs().max()  # the rows that occur moved ~100× as far (not only by weight decay)


@pytest.mark.slow
def test_untied_sides_take_their_own_rates(untied, packed_text, tmp_path):
    model, first = _expanded(untied, tmp_path / "expanded")
    own = _train(tmp_path, "own", model, packed_text, new_input_lr=1e-2, new_output_lr=1e-3)
    fast = _train(tmp_path, "fast", model, packed_text, embedding_lr=1e-2)
    slow = _train(tmp_path, "slow", model, packed_text, embedding_lr=1e-3)
    plain = _train(tmp_path, "plain", model, packed_text)
    torch.testing.assert_close(own[IN][first:], fast[IN][first:])
    torch.testing.assert_close(own[OUT][first:], slow[OUT][first:])
    for name in (IN, OUT):
        torch.testing.assert_close(own[name][:first], plain[name][:first], rtol=0, atol=0)


@pytest.mark.slow
def test_the_rate_of_the_rest_over_several_steps_changes_nothing(tiny_model, packed_text, tmp_path):
    """new_input_lr equal to lr over three steps (the snapshot kept and dropped each step) is
    the plain run, to float rounding (a step moves a weight by ~1e-4)."""
    model, _ = _expanded(tiny_model, tmp_path / "expanded")
    same = _train(tmp_path, "same", model, packed_text, steps=3, new_input_lr=1e-4)
    plain = _train(tmp_path, "plain", model, packed_text, steps=3)
    for name in plain:
        torch.testing.assert_close(same[name], plain[name], rtol=0, atol=1e-9)


def test_what_cannot_work_is_refused(tiny_model, packed_text, tmp_path):
    with pytest.raises(TrainError, match="needs a model made by `llamaforge vocab init-model`"):
        _train(tmp_path, "plain", tiny_model, packed_text, new_input_lr=1e-2)
    model, _ = _expanded(tiny_model, tmp_path / "expanded")
    with pytest.raises(TrainError, match="ties its input and output embeddings"):
        _train(tmp_path, "tied", model, packed_text, new_input_lr=1e-2, new_output_lr=1e-3)
    with pytest.raises(TrainError, match="does not train the embeddings"):
        _train(tmp_path, "lora", model, packed_text, new_input_lr=1e-2, trainable="lora")
    stage = StageConfig(name="s", data=[str(packed_text)], steps=1, new_output_lr=1e-2)
    with pytest.raises(TrainError, match="new_output_lr run with plugin ddp only"):
        TrainConfig(
            model=str(model), output_dir=str(tmp_path / "g"), stages=[stage], plugin="gemini"
        )
    both = StageConfig(
        name="s", data=[str(packed_text)], steps=1, new_input_lr=1e-2, share_spelling="input"
    )
    with pytest.raises(TrainError, match="share_spelling both move the new rows"):
        TrainConfig(model=str(model), output_dir=str(tmp_path / "b"), stages=[both])
