"""Load the model, check it against the data, and set what a stage trains."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from llamaforge_datapack import tokenizer_fingerprint
from llamaforge_trainer.errors import TrainError
from llamaforge_trainer.spelling import SPELLINGS_FILE

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def load_causal_lm(model_dir: str | Path, *, attention: str, dtype: torch.dtype = torch.float32):
    """An HF causal LM from a safetensors dir (remote code never runs)."""
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainError(f"{model_dir}: not an HF model dir (no config.json)")
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(model_dir), torch_dtype=dtype, attn_implementation=attention, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise TrainError(f"{model_dir}: cannot load the model ({exc})") from None


def build_causal_lm(
    model_dir: str | Path, *, attention: str, lazy: bool, device: torch.device
) -> nn.Module:
    """The model to train, in fp32. ``lazy``: built from its config under ColossalAI's
    ``LazyInitContext`` — no tensor exists until the plugin materialises its own shard — and
    the weights are loaded into the shards after boosting (``load_hf_weights``).

    (``from_pretrained`` inside ``LazyInitContext``, Colossal-LLaMA's pattern, loses the
    checkpoint with transformers 4.51: the replayed initialisation overwrites it.)
    """
    if not lazy:
        return load_causal_lm(model_dir, attention=attention, dtype=torch.float32)
    from colossalai.lazy import LazyInitContext
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainError(f"{model_dir}: not an HF model dir (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise TrainError(f"{model_dir}: cannot read the model config ({exc})") from None
    with LazyInitContext(default_device=device):
        return AutoModelForCausalLM.from_config(
            config, torch_dtype=torch.float32, attn_implementation=attention
        )


def check_data_fits_model(model: nn.Module, model_dir: Path, manifests: list, data) -> None:
    """The data's tokenizer and lengths must suit the model; raise a clear error otherwise."""
    config = model.config
    vocab = model.get_input_embeddings().weight.shape[0]
    for m in manifests:
        if m.max_length > getattr(config, "max_position_embeddings", m.max_length):
            raise TrainError(
                f"data max_length {m.max_length} is beyond the model's "
                f"max_position_embeddings {config.max_position_embeddings}"
            )
        has_tokenizer = any((Path(model_dir) / f).is_file() for f in TOKENIZER_FILES[:2])
        if has_tokenizer and m.tokenizer_sha256 != tokenizer_fingerprint(model_dir):
            raise TrainError(
                f"the data was packed with the tokenizer in {m.tokenizer}, which is "
                f"not the tokenizer of {model_dir}; re-pack with the model's "
                "tokenizer (ids would mean other tokens)"
            )
    top = max(max(row) for row in data[: min(len(data), 64)]["input_ids"])
    if top >= vocab:
        raise TrainError(
            f"the data holds token id {top} but the model has only {vocab} "
            "embedding rows (tokenizer / model vocabulary mismatch)"
        )


def set_trainable(causal_lm: nn.Module, mode: str) -> int:
    """Freeze / unfreeze parameters for a stage; return the number of trainable parameters.

    ``embeddings``: only the input embedding and (if not tied) the output projection — the
    first stage after a vocabulary expansion. ``all``: everything. ``lora``: only LoRA adapters
    (they must already be attached).
    """
    base = causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm
    for name, p in causal_lm.named_parameters():
        if mode == "all":
            p.requires_grad_(True)
        elif mode == "lora":
            p.requires_grad_("lora_" in name)
        else:
            p.requires_grad_(False)
    if mode in ("embeddings", "new-embeddings"):
        base.get_input_embeddings().weight.requires_grad_(True)
        base.get_output_embeddings().weight.requires_grad_(True)  # same tensor when tied
    return sum(p.numel() for p in causal_lm.parameters() if p.requires_grad)


def first_new_row(
    causal_lm: nn.Module,
    needs: str = "trainable = 'new-embeddings'",
    instead: str = "use trainable = 'embeddings'",
) -> int:
    """Where the rows of a vocabulary expansion start: ``expanded_from_vocab_size`` in the
    model's config (written by ``llamaforge vocab init-model``); ``needs`` names the setting
    that asks, ``instead`` what to do with a model that has no such rows."""
    first = getattr(causal_lm.config, "expanded_from_vocab_size", None)
    rows = causal_lm.get_input_embeddings().weight.shape[0]
    if not isinstance(first, int) or not 0 < first < rows:
        raise TrainError(
            f"{needs} needs a model made by `llamaforge vocab init-model` (its config.json "
            f"names expanded_from_vocab_size below the {rows} rows; found {first!r}); {instead}"
        )
    return first


def train_new_rows_only(causal_lm: nn.Module) -> list:
    """Zero the gradient of every old row of the input and output embeddings (one matrix when
    tied), so that only the new rows learn; returns the hook handles to remove."""
    first = first_new_row(causal_lm)
    weights = {
        id(m.weight): m.weight
        for m in (causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings())
    }
    handles = []
    for weight in weights.values():
        keep = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        keep[first:] = 1
        handles.append(weight.register_hook(lambda grad, keep=keep: grad * keep))
    return handles


def attach_lora(causal_lm: nn.Module, lora) -> nn.Module:
    """Wrap with peft LoRA adapters (idempotent)."""
    if hasattr(causal_lm, "get_base_model"):
        return causal_lm
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(causal_lm, cfg)


class NEFTune:
    """Uniform noise on the input embeddings while training (Jain et al., 2023).

    Noise ~ U(-1, 1) · alpha / sqrt(L · d), drawn from a generator seeded per step so resumed
    runs draw the same noise.
    """

    def __init__(self, embedding: nn.Module, alpha: float, seed: int):
        self.alpha, self.seed, self.step = alpha, seed, 0
        self.handle = embedding.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if not module.training or self.alpha <= 0:
            return output
        gen = torch.Generator(device=output.device).manual_seed(self.seed * 1_000_003 + self.step)
        scale = self.alpha / (output.shape[-2] * output.shape[-1]) ** 0.5
        noise = (
            torch.rand(output.shape, generator=gen, device=output.device, dtype=torch.float32) * 2
            - 1
        )
        return output + (noise * scale).to(output.dtype)

    def remove(self) -> None:
        self.handle.remove()


def causal_lm_from_state(model_dir: Path, state: dict[str, torch.Tensor]) -> nn.Module:
    """The model of ``model_dir``'s config holding a trained state dict (gathered from any
    plugin's checkpoint), in fp32 — built without initialising or reading the original
    weights, so an export holds one copy of the model in memory, not two.

    A tied output projection may be absent from the state. Anything else missing or
    unexpected is an error, not a silently half-initialised model.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    lm, info = AutoModelForCausalLM.from_pretrained(
        None,
        config=config,
        state_dict=state,
        torch_dtype=torch.float32,
        attn_implementation="sdpa",
        output_loading_info=True,
    )
    tied = lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    missing = [k for k in info["missing_keys"] if not (tied and k.endswith("lm_head.weight"))]
    unexpected = info["unexpected_keys"] + info["mismatched_keys"]
    if missing or unexpected:
        raise TrainError(
            f"the trained weights do not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return lm


def save_hf(causal_lm: nn.Module, model_dir: Path, out: Path) -> None:
    """Write a plain HF dir (safetensors, config, generation config, tokenizer files)."""
    import shutil

    lm = causal_lm
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(out), safe_serialization=True)
    for name in (*TOKENIZER_FILES, "generation_config.json", SPELLINGS_FILE):
        src = Path(model_dir) / name
        if src.is_file() and not (out / name).exists():
            shutil.copyfile(src, out / name)
    meta = {"exported_by": "llamaforge-trainer", "base_model": str(model_dir)}
    (out / "llamaforge_export.json").write_text(json.dumps(meta, indent=2))
