"""Training in this process (ddp plugin, world size 1, gloo): stages, freezing, accumulation,
export, and every bad input the issue names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llamaforge_trainer import StageConfig, TrainConfig, TrainError, load_config
from llamaforge_trainer.metrics import read_metrics
from llamaforge_trainer.trainer import Trainer

WORKSPACE = Path(__file__).resolve().parents[2]  # the packages/ folder


def _config(tmp_path, model, data, stages, **kw) -> TrainConfig:
    stages = [
        StageConfig(**{"name": f"s{i}", "data": [str(data)], **s}) for i, s in enumerate(stages)
    ]
    kw.setdefault("precision", "fp32")  # the same numbers on every machine unless a test asks
    return TrainConfig(model=str(model), output_dir=str(tmp_path / "run"), stages=stages, **kw)


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_two_stages_loss_decreases_and_export_loads(tiny_model, packed_text, tmp_path):
    cfg = _config(
        tmp_path,
        tiny_model,
        packed_text,
        [
            {"trainable": "embeddings", "steps": 4, "lr": 1e-2, "micro_batch_size": 4},
            {"steps": 16, "lr": 3e-3, "micro_batch_size": 4},
        ],
        save_interval=5,
    )
    result = Trainer(cfg).train()
    rows = read_metrics(cfg.output_dir)
    assert [r["global_step"] for r in rows] == list(range(1, 21))
    assert [r["stage"] for r in rows] == ["s0"] * 4 + ["s1"] * 16
    losses = [r["loss"] for r in rows]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    assert all(0 < r["mfu"] < 1 and r["tokens_per_s"] > 0 for r in rows)
    assert (Path(cfg.output_dir) / "loss.png").stat().st_size > 5000
    assert list((Path(cfg.output_dir) / "tensorboard").iterdir())
    ckpts = sorted(p.name for p in (Path(cfg.output_dir) / "checkpoints").iterdir())
    assert ckpts == ["step-00000019", "step-00000020"]  # every 5 stage steps + end; keep 2
    # The export loads with plain transformers, without llamaforge importable, and generates.
    code = (
        "import sys, importlib.util\n"
        f"sys.path = [p for p in sys.path if not p.startswith({str(WORKSPACE)!r})]\n"
        "assert importlib.util.find_spec('llamaforge_trainer') is None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(result.export_dir)!r})\n"
        f"t = AutoTokenizer.from_pretrained({str(result.export_dir)!r})\n"
        "out = m.generate(**t('人民', return_tensors='pt'), max_new_tokens=5, do_sample=False)\n"
        "print(out.shape[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]


def test_embedding_stage_changes_only_embeddings(tiny_model, packed_text, tmp_path):
    cfg = _config(
        tmp_path, tiny_model, packed_text, [{"trainable": "embeddings", "steps": 3, "lr": 1e-2}]
    )
    Trainer(cfg).train()
    before, after = _weights(tiny_model), _weights(Path(cfg.output_dir) / "export")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.embed_tokens.weight"}  # tied: lm_head is the same tensor


def test_new_embeddings_stage_changes_only_the_new_rows(tiny_model, packed_text, tmp_path):
    """Rows from ``expanded_from_vocab_size`` on learn; every old row and every other weight
    stays bit-identical (no decay either), also with weight_decay set."""
    import shutil

    model = tmp_path / "expanded"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    first = config["vocab_size"] - 2000  # SmolLM2's common ids are below: many of these occur
    (model / "config.json").write_text(json.dumps({**config, "expanded_from_vocab_size": first}))
    stage = {"trainable": "new-embeddings", "steps": 3, "lr": 1e-2, "weight_decay": 0.5}
    cfg = _config(tmp_path, model, packed_text, [stage])
    Trainer(cfg).train()
    before, after = _weights(model), _weights(Path(cfg.output_dir) / "export")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.embed_tokens.weight"}
    old, new = before["model.embed_tokens.weight"], after["model.embed_tokens.weight"]
    assert torch.equal(old[:first], new[:first])
    assert not torch.equal(old[first:], new[first:])
    # a model that does not say where its new rows start is refused before training
    plain = _config(tmp_path / "plain", tiny_model, packed_text, [stage])
    with pytest.raises(TrainError, match="needs a model made by `llamaforge vocab init-model`"):
        Trainer(plain).train()


def test_embedding_lr_moves_the_embeddings_at_their_own_rate(tiny_model, packed_text, tmp_path):
    """Adam's first step moves each weight by about its group's lr: the embeddings by
    embedding_lr, the rest by lr."""
    stage = {
        "steps": 1,
        "lr": 1e-4,
        "embedding_lr": 1e-2,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "micro_batch_size": 4,
    }
    cfg = _config(tmp_path, tiny_model, packed_text, [stage])
    Trainer(cfg).train()
    before, after = _weights(tiny_model), _weights(Path(cfg.output_dir) / "export")
    moved = {k: float((after[k] - before[k]).abs().max()) for k in before}
    assert moved.pop("model.embed_tokens.weight") == pytest.approx(1e-2, rel=0.02)
    assert max(moved.values()) == pytest.approx(1e-4, rel=0.02)
    with pytest.raises(TrainError, match="embedding_lr runs with plugin ddp only"):
        _config(tmp_path, tiny_model, packed_text, [stage], plugin="gemini")


def test_grad_accumulation_equals_bigger_batch(tiny_model, packed_text, tmp_path):
    common = {"steps": 2, "lr": 1e-3, "max_grad_norm": 0.0, "warmup_ratio": 0.0}
    a = _config(
        tmp_path / "a",
        tiny_model,
        packed_text,
        [{**common, "micro_batch_size": 1, "grad_accum": 4}],
    )
    b = _config(
        tmp_path / "b",
        tiny_model,
        packed_text,
        [{**common, "micro_batch_size": 4, "grad_accum": 1}],
    )
    Trainer(a).train()
    Trainer(b).train()
    la = [r["loss"] for r in read_metrics(a.output_dir)]
    lb = [r["loss"] for r in read_metrics(b.output_dir)]
    assert la == pytest.approx(lb, rel=1e-5)
    wa, wb = _weights(Path(a.output_dir) / "export"), _weights(Path(b.output_dir) / "export")
    for k in wa:
        # Adam divides by sqrt(v): float noise in near-zero gradients can move single weights
        # by up to ~lr; on average the two runs agree to float precision.
        diff = (wa[k] - wb[k]).abs()
        assert float(diff.max()) <= 0.1 * common["lr"] and float(diff.mean()) < 1e-6, k


def test_bf16_on_ddp_runs_under_autocast_and_tracks_fp32(tiny_model, packed_text, tmp_path):
    """ddp keeps fp32 weights and computes in bf16 under autocast (on CPU too); the loss
    follows the fp32 run closely but not exactly, and the exported weights stay fp32."""
    stage = [{"steps": 3, "lr": 3e-3}]
    curves = {}
    for precision in ("fp32", "bf16"):
        config = _config(tmp_path / precision, tiny_model, packed_text, stage, precision=precision)
        Trainer(config).train()
        curves[precision] = [r["loss"] for r in read_metrics(config.output_dir)]
    assert curves["bf16"] == pytest.approx(curves["fp32"], rel=2e-2)
    assert curves["bf16"] != curves["fp32"]  # it did compute in bf16
    exported = _weights(tmp_path / "bf16" / "run" / "export")
    assert {v.dtype for v in exported.values()} == {torch.float32}
    if not torch.cuda.is_available():
        fp16 = _config(tmp_path / "fp16", tiny_model, packed_text, stage, precision="fp16")
        with pytest.raises(TrainError, match="precision 'fp16' needs CUDA"):
            Trainer(fp16)


def test_nan_loss_stops_or_skips(tiny_model, packed_text, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = _weights(tiny_model)
    weights["model.norm.weight"][0] = float("nan")
    from safetensors.torch import save_file

    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    stop = _config(tmp_path / "stop", broken, packed_text, [{"steps": 3}])
    with pytest.raises(
        TrainError,
        match=r"non-finite loss \(nan\) at step 1 .* last good "
        r"checkpoint: none yet",
    ):
        Trainer(stop).train()
    skip = _config(tmp_path / "skip", broken, packed_text, [{"steps": 3}], on_nan="skip")
    result = Trainer(skip).train()
    assert result.skipped_steps == 3


def test_ranks_checking_one_output_dir_at_once_all_pass(tmp_path):
    """Every rank checks the output dir as it starts; with one shared probe file a rank could
    find it deleted by another and stop with "cannot write checkpoints there" (seen in CI on a
    4-process run)."""
    from concurrent.futures import ThreadPoolExecutor

    from llamaforge_trainer.checkpoint import check_writable

    def rank(_: int) -> None:
        for _ in range(200):
            check_writable(tmp_path / "run")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(rank, range(8)))
    assert list((tmp_path / "run").iterdir()) == []  # no probe left behind


def test_bad_inputs_have_clear_messages(tiny_model, packed_text, asset, tmp_path):
    with pytest.raises(TrainError, match=r"dataset .*missing does not exist"):
        Trainer(_config(tmp_path, tiny_model, tmp_path / "missing", [{"steps": 1}])).train()
    # Data packed with another tokenizer than the model's.
    from llamaforge_datapack import PackConfig, Source, TokenizeConfig, pack

    (tmp_path / "t.txt").write_text("中文文本。\n" * 50, encoding="utf-8")
    other = tmp_path / "other"
    pack(
        [Source(name="t", inputs=[str(tmp_path / "t.txt")])],
        TokenizeConfig(tokenizer_dir=asset("llama2-tokenizer"), max_length=128),
        PackConfig(out_dir=other),
    )
    with pytest.raises(TrainError, match="not the tokenizer of"):
        Trainer(_config(tmp_path, tiny_model, other, [{"steps": 1}])).train()
    # max_length beyond the model's positions.
    short = tmp_path / "short"
    short.mkdir()
    for f in tiny_model.iterdir():
        (short / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(dict(cfg, max_position_embeddings=64)))
    with pytest.raises(TrainError, match="beyond the model's max_position_embeddings 64"):
        Trainer(_config(tmp_path, short, packed_text, [{"steps": 1}])).train()
    # An output dir that cannot be written.
    (tmp_path / "file").write_text("x")
    bad = _config(tmp_path, tiny_model, packed_text, [{"steps": 1}])
    bad.output_dir = str(tmp_path / "file" / "run")
    with pytest.raises(TrainError, match="cannot write checkpoints there"):
        Trainer(bad).train()
    # GPU-only plugins refuse early without CUDA.
    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match="plugin 'gemini' needs CUDA"):
            Trainer(
                _config(tmp_path, tiny_model, packed_text, [{"steps": 1}], plugin="gemini")
            ).train()


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "m"\noutput_dir = "o"\nplugn = "ddp"\n'
        '[[stages]]\nname = "a"\ndata = ["d"]\nsteps = 0\ntrainable = "head"\n'
    )
    with pytest.raises(TrainError) as err:
        load_config(path)
    message = str(err.value)
    assert "plugn: unknown setting (did you mean plugin?)" in message
    # every problem at once, each with its path
    assert "stages.0.steps: Input should be greater than or equal to 1 (got 0)" in message
    choices = "'all', 'embeddings', 'new-embeddings' or 'lora'"
    assert f"stages.0.trainable: Input should be {choices}" in message
    path.write_text('model = "m"\noutput_dir = "o"\n[[stages]]\nsteps = 2\n')
    with pytest.raises(TrainError) as err:
        load_config(path)
    assert "stages.0.name: missing required setting" in str(err.value)
    assert "stages.0.data: missing required setting" in str(err.value)
    path.write_text(
        'model = "m"\noutput_dir = "o"\n'
        '[[stages]]\nname = "a"\ndata = ["d"]\nsteps = 0\ntrainable = "head"\n'
    )
    cfg = load_config(path, ["stages.0.steps=5", "stages.0.trainable=embeddings", "seed=3"])
    assert (cfg.stages[0].steps, cfg.stages[0].trainable, cfg.seed) == (5, "embeddings", 3)
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("model: m\noutput_dir: o\nstages:\n  - {name: a, data: [d], steps: 2}\n")
    assert load_config(yaml_path).stages[0].steps == 2
    assert load_config(yaml_path, ["plugin=3d", "tp=2"]).tp == 2
    assert load_config(yaml_path, ["plugin=3d", "pp=2", "stages.0.grad_accum=4"]).pp == 2
    with pytest.raises(TrainError, match="optimizer: Input should be 'auto', 'hybrid_adam'"):
        load_config(yaml_path, ["optimizer=adam"])
    with pytest.raises(TrainError, match="Gemini runs with ColossalAI's HybridAdam only"):
        load_config(yaml_path, ["optimizer=adamw", "plugin=gemini"])


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ('stages.0.lr="abc"', "stages.0.lr: Input should be a valid number (got 'abc')"),
        ("stages.0.lr=0", "stages.0.lr: Input should be greater than 0"),
        # a float batch size hung the loop forever (rows never reached 1.5)
        ("stages.0.micro_batch_size=1.5", "stages.0.micro_batch_size: Input should be a valid"),
        ('stages.0.steps="5"', "stages.0.steps: Input should be a valid integer (got '5')"),
        ("stages.0.grad_accum=true", "stages.0.grad_accum: Input should be a valid integer"),
        ("seed=null", "seed: Input should be a valid integer (got None)"),
        ("stages.0.betas=[0.9]", "stages.0.betas.1: Field required"),
        ("lora.r=0", "lora.r: Input should be greater than or equal to 1"),
        ("lora.alpah=4", "lora.alpah: unknown setting (did you mean alpha?)"),
        ("stages.0.warmup_ratio=1", "stages.0.warmup_ratio: Input should be less than 1"),
        ("stages=[]", "stages: List should have at least 1 item"),
        ('sp_mode="ring_attn"', "sp_mode: 'ring_attn' needs ShardFormer's flash attention"),
    ],
)
def test_every_recipe_value_is_type_checked(tmp_path, override, error):
    """Bad-input table for recipe values: each gives its field path and what is wrong."""
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "m"\noutput_dir = "o"\n[[stages]]\nname = "a"\ndata = ["d"]\nsteps = 2\n'
    )
    with pytest.raises(TrainError) as err:
        load_config(path, [override])
    assert error in str(err.value)
    assert str(err.value).startswith(f"{path}: invalid training config:")


def test_set_names_stages_and_reads_json_or_toml_values(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "m"\noutput_dir = "o"\n[[stages]]\nname = "a"\ndata = ["d"]\nsteps = 2\n'
        '[[stages]]\nname = "full"\ndata = ["d"]\nsteps = 2\n'
    )
    sets = ["stages.full.steps=80", "stages.0.betas=[0.8, 0.9]", "stages.a.data=['x', 'y']"]
    cfg = load_config(path, [*sets, "stages.full.trainable = embeddings"])
    assert [st.steps for st in cfg.stages] == [2, 80] and cfg.stages[0].betas == (0.8, 0.9)
    assert cfg.stages[0].data == ["x", "y"] and cfg.stages[1].trainable == "embeddings"
    for bad, error in [
        ("seed", "--set seed: expected KEY=VALUE"),
        ("stages..lr=1", "expected KEY=VALUE"),
        ("stages.b.lr=1", "stages has no entry 'b' (0–1 or a, full)"),
        ("stages.5.lr=1", "stages has no entry '5'"),
        ("model.path=x", "model is a value, not a table"),
    ]:
        with pytest.raises(TrainError) as err:
            load_config(path, [bad])
        assert error in str(err.value), bad


def test_config_round_trips_through_json(tmp_path):
    """What --nproc hands torchrun: the validated config as JSON, read back identical."""
    path = tmp_path / "c.toml"
    path.write_text(
        'model = "m"\noutput_dir = "o"\nseed = 7\n[lora]\nr = 4\n'
        '[[stages]]\nname = "a"\ndata = ["d"]\nsteps = 2\nbetas = [0.8, 0.9]\n'
    )
    cfg = load_config(path, ["stages.0.lr=3e-4"])
    launch = tmp_path / "launch.json"
    launch.write_text(cfg.model_dump_json())
    assert load_config(launch) == cfg
    assert load_config(launch).stages[0].betas == (0.8, 0.9)


def test_optimizer_choice(tiny_model, packed_text, tmp_path):
    """``auto`` takes HybridAdam where ColossalAI's kernels build (CUDA), else torch's AdamW;
    asking for HybridAdam without CUDA is refused with the reason."""
    stage = [{"steps": 1}]
    result = Trainer(_config(tmp_path / "auto", tiny_model, packed_text, stage)).train()
    assert result.optimizer == ("HybridAdam" if torch.cuda.is_available() else "AdamW")
    forced = _config(tmp_path / "ha", tiny_model, packed_text, stage, optimizer="hybrid_adam")
    if torch.cuda.is_available():
        assert Trainer(forced).train().optimizer == "HybridAdam"
    else:
        with pytest.raises(TrainError, match="optimizer 'hybrid_adam' needs CUDA"):
            Trainer(forced).train()


def test_cpu_adamw_is_the_fused_kernel_and_takes_the_loops_steps(tiny_model, packed_text, tmp_path):
    """On CPU torch's AdamW defaults to a Python loop over the tensors (0.7 s of a ~9 s demo
    step); the trainer takes the fused kernel, which must move the weights the same way."""
    from llamaforge_trainer.booster import build_optimizer

    if torch.cuda.is_available():
        pytest.skip("CUDA takes HybridAdam")
    cfg = _config(tmp_path, tiny_model, packed_text, [{"steps": 1, "lr": 1e-2}])
    g = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(300, 17, generator=g)) for _ in range(3)]
    loop = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    fused = build_optimizer(ours, cfg.stages[0], cfg)
    assert fused.defaults["fused"]
    plain = torch.optim.AdamW(loop, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for params, opt in ((ours, fused), (loop, plain)):
            for p, grad in zip(params, grads, strict=True):
                p.grad = grad.clone()
            opt.step()
    for a, b in zip(ours, loop, strict=True):
        assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a, torch.zeros_like(a))


def test_cpu_allocator_setting(tiny_model, packed_text, tmp_path, caplog):
    """``reuse`` (the default) applies where the C library is glibc, and a CPU trainer applies
    it; ``system`` leaves malloc alone; anything else is refused by name."""
    import logging
    import platform

    from llamaforge_trainer.allocator import keep_freed_memory

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() == glibc
    stage = [{"steps": 1}]
    said = f"malloc keeps freed memory for reuse: {glibc}"
    with caplog.at_level(logging.INFO, logger="llamaforge_trainer.trainer"):
        cfg = _config(tmp_path / "reuse", tiny_model, packed_text, stage)
        assert cfg.cpu_allocator == "reuse"
        Trainer(cfg)
        assert (said in caplog.text) == (not torch.cuda.is_available())
        caplog.clear()
        system = _config(tmp_path / "sys", tiny_model, packed_text, stage, cpu_allocator="system")
        Trainer(system)
        assert "malloc keeps freed memory" not in caplog.text
    with pytest.raises(TrainError, match="cpu_allocator: Input should be .reuse. or .system."):
        _config(tmp_path, tiny_model, packed_text, stage, cpu_allocator="jemalloc")


def test_a_kernel_build_failure_is_told_in_one_line():
    """What the log (auto) or the refusal (hybrid_adam) says when ColossalAI cannot build
    HybridAdam's kernels: the compiler's error, not its whole log."""
    from llamaforge_trainer.booster import _build_failure

    log = (
        "Error building extension 'cpu_adam_x86': [1/2] c++ -MMD -c cpu_adam.cpp -o cpu_adam.o\n"
        "FAILED: cpu_adam.o\nIn file included from cpu_adam.cpp:22:\n"
        "cpu_adam.h:24:10: fatal error: cublas_v2.h: No such file or directory\n"
        "compilation terminated.\nninja: build stopped: subcommand failed.\n"
    )
    assert _build_failure(RuntimeError(log)).endswith(
        "fatal error: cublas_v2.h: No such file or directory"
    )
    missing = AssertionError("[extension] CUDA_HOME is not found. You need to export CUDA_HOME")
    assert _build_failure(missing).startswith("[extension] CUDA_HOME is not found")
    assert _build_failure(RuntimeError()) == "RuntimeError"


@pytest.mark.gpu
def test_hybrid_adam_and_torch_adamw_train_alike(tiny_model, packed_text, tmp_path):
    """The same bf16 run with ColossalAI's HybridAdam and with torch's fused AdamW (the
    fallback where HybridAdam's kernels do not build)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    curves = {}
    for name in ("hybrid_adam", "adamw"):
        cfg = _config(
            tmp_path / name,
            tiny_model,
            packed_text,
            [{"steps": 4, "lr": 3e-3}],
            precision="bf16",
            optimizer=name,
        )
        assert Trainer(cfg).train().optimizer == {"hybrid_adam": "HybridAdam"}.get(name, "AdamW")
        curves[name] = [r["loss"] for r in read_metrics(cfg.output_dir)]
    assert curves["hybrid_adam"] == pytest.approx(curves["adamw"], rel=2e-2)


def test_lora_stage_trains_adapters_and_exports_merged(tiny_model, packed_text, tmp_path):
    cfg = _config(
        tmp_path, tiny_model, packed_text, [{"trainable": "lora", "steps": 3, "lr": 1e-2}]
    )
    result = Trainer(cfg).train()
    before, after = _weights(tiny_model), _weights(result.export_dir)
    assert set(after) == set(before)  # merged: plain weights, no adapter tensors
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        ("q_proj" in k or "k_proj" in k or "v_proj" in k or "o_proj" in k) for k in changed
    )


@pytest.mark.slow
def test_real_smollm2_loss_decreases_on_chinese(asset, tmp_path):
    from llamaforge_datapack import PackConfig, Source, TokenizeConfig, pack

    lines = (asset("people-daily") / "train.txt").read_text(encoding="utf-8").splitlines()[:200]
    (tmp_path / "zh.txt").write_text("\n".join(lines), encoding="utf-8")
    pack(
        [Source(name="zh", inputs=[str(tmp_path / "zh.txt")])],
        TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=256),
        PackConfig(out_dir=tmp_path / "packed"),
    )
    cfg = _config(
        tmp_path,
        asset("smollm2-135m"),
        tmp_path / "packed",
        # fp32 here: 2.959, 2.965, 2.753, 2.704 (8 steps took twice as long to show the same)
        [{"steps": 4, "lr": 2e-4, "micro_batch_size": 2, "warmup_ratio": 0.0}],
        export=False,
    )
    Trainer(cfg).train()
    losses = [r["loss"] for r in read_metrics(cfg.output_dir)]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2


@pytest.mark.slow
def test_colossalai_run_launches_the_trainer_on_each_process(tiny_model, packed_text, tmp_path):
    """Colossal-LLaMA's launcher (``--hostfile`` for many nodes; here one node) starts
    ``python -m llamaforge_trainer`` through torchrun, and the processes train as one."""
    import os
    import socket

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'model = "{tiny_model}"\noutput_dir = "{tmp_path / "run"}"\n'
        f'[[stages]]\nname = "s"\ndata = ["{packed_text}"]\nsteps = 2\n'
    )
    bin_dir = str(Path(sys.executable).parent)  # colossalai run calls torchrun from PATH
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    cmd = [f"{bin_dir}/colossalai", "run", "--nproc_per_node", "2", "--master_port", port]
    done = subprocess.run(
        [*cmd, "-m", "llamaforge_trainer", str(recipe)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert [r["global_step"] for r in read_metrics(tmp_path / "run")] == [1, 2]
    final = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in final.glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]


def test_export_model_is_built_from_the_trained_state_alone(tiny_model):
    """What the non-ddp export does with a checkpoint's gathered weights."""
    from llamaforge_trainer.model import causal_lm_from_state

    state = {k: v + 0.5 for k, v in _weights(tiny_model).items()}
    lm = causal_lm_from_state(tiny_model, state)
    assert all(torch.equal(lm.state_dict()[k], v) for k, v in state.items())
    assert lm.lm_head.weight is lm.model.embed_tokens.weight  # still tied
    del state["model.norm.weight"]
    with pytest.raises(TrainError, match=r"do not fit the model: missing \['model.norm.weight'\]"):
        causal_lm_from_state(tiny_model, state)


def test_cpu_peak_is_an_upper_bound_of_real_matmuls():
    """MFU divides by the CPU's instruction-set peak (threads × top clock × FLOPs per cycle),
    which no matmul may beat — a timed matmul as the peak let MFU pass 100 %."""
    import torch

    from llamaforge_trainer.metrics import cpu_peak_flops, measure_matmul_flops

    peak = cpu_peak_flops(torch.float32)
    if peak is None:
        pytest.skip("no /proc/cpuinfo")
    best = measure_matmul_flops(torch.device("cpu"), torch.float32, size=2048, seconds=2.0)
    assert best <= peak[0], (best, peak)
    assert "FLOP/cycle" in peak[1]


@pytest.mark.parametrize("verbose", [False, True])
def test_known_third_party_hints_are_filtered_unless_verbose(verbose):
    import subprocess
    import sys

    code = f"""
import logging, warnings
from llamaforge_trainer import quiet_known_messages
quiet_known_messages(verbose={verbose})
warnings.warn("Please install apex from source (https://github.com/NVIDIA/apex) to use it")
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: no network")
warnings.warn("a warning of our own stays")
logging.getLogger("elsewhere").warning("so does any other log line")
"""
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert "a warning of our own stays" in err and "so does any other log line" in err
    assert ("Please install apex" in err) is verbose
    assert ("gemm_4bit_forward" in err) is verbose


@pytest.mark.slow
@pytest.mark.parametrize("user_setting", [None, "1"])
def test_a_training_process_starts_no_compiler_pool_unless_asked(user_setting):
    """Importing ColossalAI's booster imports torch's compiler, which would start a pool of
    worker processes for every rank; the entry point keeps it from starting, and a user's own
    ``TORCH_WARM_POOL=1`` still starts it."""
    import os
    import subprocess
    import sys

    code = """
from llamaforge_trainer import no_compile_pool
no_compile_pool()
import colossalai.booster
from torch._inductor.async_compile import AsyncCompile
print("pools", AsyncCompile.process_pool.cache_info().currsize)
"""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_WARM_POOL"}
    if user_setting is not None:
        env["TORCH_WARM_POOL"] = user_setting
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"pools {1 if user_setting else 0}" in done.stdout


def test_precision_auto_follows_the_bf16_flags(tiny_model, packed_text, tmp_path):
    """auto is bf16 only where the CPU has bf16 units — AVX-512 alone is not enough — and the
    trainer runs in what auto resolved to."""
    from llamaforge_trainer.metrics import cpu_flags, cpu_has_native_bf16, resolve_precision
    from llamaforge_trainer.step import autocast

    assert not cpu_has_native_bf16({"avx2", "fma"})
    assert not cpu_has_native_bf16({"avx2", "avx512f", "avx512bw", "avx512_vnni"})
    assert cpu_has_native_bf16({"avx512f", "avx512_bf16"})
    assert cpu_has_native_bf16({"amx_tile", "amx_bf16"})
    cpu = torch.device("cpu")
    here = "bf16" if cpu_has_native_bf16(cpu_flags()) else "fp32"
    assert resolve_precision("auto", cpu) == here
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert TrainConfig.model_fields["precision"].default == "auto"
    stage = [{"steps": 1, "micro_batch_size": 2}]
    cfg = _config(tmp_path, tiny_model, packed_text, stage, precision="auto")
    trainer = Trainer(cfg)
    assert trainer.config.precision == here
    expected = "autocast" if here == "bf16" else "nullcontext"
    assert type(autocast(trainer.config, trainer.dist.device)).__name__ == expected


@pytest.mark.slow
def test_trains_on_a_dir_packed_by_the_ray_engine(tiny_model, asset, tmp_path):
    """data-pack's Ray engine writes the same format: the trainer reads it unchanged and
    sees as many tokens as the local engine's output holds."""
    pytest.importorskip("ray")
    from llamaforge_datapack import PackConfig, Source, TokenizeConfig, pack

    zh = (asset("people-daily") / "train.txt").read_text(encoding="utf-8").splitlines()[:200]
    (tmp_path / "zh.txt").write_text("\n".join(zh), encoding="utf-8")
    tok = TokenizeConfig(tokenizer_dir=asset("smollm2-tokenizer"), max_length=128)
    packed = {}
    for engine in ("local", "ray"):
        packed[engine] = pack(
            [Source(name="zh", inputs=[str(tmp_path / "zh.txt")])],
            tok,
            PackConfig(out_dir=tmp_path / engine, num_bins=2, engine=engine, block_records=50),
        )
    assert packed["ray"].tokens == packed["local"].tokens
    cfg = _config(tmp_path, tiny_model, tmp_path / "ray", [{"steps": 3, "micro_batch_size": 2}])
    Trainer(cfg).train()
    rows = read_metrics(cfg.output_dir)
    assert [r["global_step"] for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
