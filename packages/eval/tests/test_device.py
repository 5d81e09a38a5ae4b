"""Device and dtype selection: the same rules for the API, the command and --nproc."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llamaforge_eval import EvalError, evaluate_model, resolve_device, resolve_dtype
from llamaforge_eval.device import cpu_has_native_bf16


def test_device_settings():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EvalError, match="is not one of auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EvalError, match="torch sees no GPU here"):
            resolve_device("cuda:1")


def test_auto_dtype_follows_the_checkpoint_and_the_device(tiny_eval_model, tmp_path):
    bf16 = tmp_path / "bf16"
    shutil.copytree(tiny_eval_model, bf16)
    config = json.loads((bf16 / "config.json").read_text())
    (bf16 / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    assert resolve_dtype("auto", bf16, "cpu") == (
        "bfloat16" if cpu_has_native_bf16() else "float32"
    )
    assert resolve_dtype("auto", tiny_eval_model, "cpu") == "float32"
    assert resolve_dtype("float16", tiny_eval_model, "cpu") == "float16"
    with pytest.raises(EvalError, match="dtype 'half' is not one of"):
        resolve_dtype("half", tiny_eval_model, "cpu")


def test_results_say_where_and_in_what_they_ran(tiny_eval_model, tmp_path):
    text = tmp_path / "held.txt"
    text.write_text("one document\nanother one\n")
    results = evaluate_model(tiny_eval_model, texts={"en": [text]}, dtype="bfloat16", device="cpu")
    assert (results["device"], results["dtype"]) == ("cpu", "bfloat16")
    assert results["text"]["en"]["bits_per_char"] > 0


@pytest.mark.gpu
def test_auto_evaluates_on_the_gpu(tiny_eval_model, tmp_path):
    text = tmp_path / "held.txt"
    text.write_text("one document\nanother one\n")
    results = evaluate_model(tiny_eval_model, texts={"en": [text]})
    assert results["device"].startswith("cuda")
    cpu = evaluate_model(tiny_eval_model, texts={"en": [text]}, device="cpu", dtype="float32")
    gpu = evaluate_model(tiny_eval_model, texts={"en": [text]}, dtype="float32")
    assert gpu["text"]["en"]["bits_per_char"] == pytest.approx(
        cpu["text"]["en"]["bits_per_char"], rel=1e-3
    )
