"""Resize a model's embeddings to an expanded tokenizer and initialise the new rows.

Each new token's input row (and, separately, its output row) is the mean of the rows of the old
tokens that the *old* tokenizer splits its text into, as Colossal-LLaMA does; ``noisy-mean`` adds
Gaussian noise scaled to the old rows' spread; special / reserved tokens get the mean of all old
rows. ``config.json`` records ``expanded_from_vocab_size`` (the first new row). The work is
vectorised over chunks of new rows (no per-token array concatenation), reads and writes
safetensors shard by shard, copies unchanged tensors as raw bytes and keeps the dtype, so memory
stays near the size of the matrices being changed. Needs the ``[model]`` extra (torch).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.outdir import atomic_output_dir, check_output_dir
from llamaforge_tokenizer.safetensors_io import Pending, read_header, write_file
from llamaforge_tokenizer.subtokens import old_vocab_size, subtoken_ids

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
INPUT_NAMES = ("model.embed_tokens.weight",)
OUTPUT_NAMES = ("lm_head.weight",)
SPELLINGS_FILE = "expansion.json"
"""The spellings of the new ids, next to the weights (read by the trainer's ``share_spelling``)."""
_TORCH_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


class InitMethod(str, Enum):
    """How new embedding rows are initialised."""

    MEAN = "mean"
    NOISY_MEAN = "noisy-mean"
    FREQ_OUT = "freq-out"


@dataclass(kw_only=True)
class InitConfig:
    """Settings of :func:`init_model`."""

    method: InitMethod = InitMethod.MEAN
    """``mean`` of the sub-token rows; ``noisy-mean`` (mean plus Gaussian noise); ``freq-out``
    (mean, then each new output row given its piece's frequency logit — see
    :mod:`llamaforge_tokenizer.freq_out`; needs ``corpus``)."""
    noise_scale: float = 0.1
    """noisy-mean: noise std as a fraction of the old rows' std."""
    seed: int = 0
    """noisy-mean: random seed."""
    chunk_rows: int = 1024
    """New rows computed per step (bounds the temporary fp32 buffers)."""
    corpus: list[Path] = field(default_factory=list)
    """freq-out: training text of the target language (a document per line)."""
    corpus_docs: int = 2000
    """freq-out: documents of ``corpus`` counted."""
    context: int = 512
    """freq-out: tokens per document read by the model for the mean hidden state."""

    def __post_init__(self) -> None:
        self.method = InitMethod(self.method)
        if self.noise_scale < 0:
            raise TokenizerExpandError(f"noise_scale must be ≥ 0, got {self.noise_scale}")
        if self.chunk_rows < 1:
            raise TokenizerExpandError(f"chunk_rows must be ≥ 1, got {self.chunk_rows}")
        self.corpus = [Path(p) for p in self.corpus]
        if self.method is InitMethod.FREQ_OUT:
            if not self.corpus:
                raise TokenizerExpandError("freq-out needs a corpus of the new language's text")
            for path in self.corpus:
                if not path.is_file():
                    raise TokenizerExpandError(f"{path}: no such corpus file")
        if self.corpus_docs < 1 or self.context < 1:
            raise TokenizerExpandError("corpus_docs and context must be ≥ 1")


@dataclass(kw_only=True)
class InitReport:
    old_rows: int
    new_rows: int
    tied: bool
    matrices: list[str]
    method: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / f for f in dict.fromkeys(weight_map.values())]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise TokenizerExpandError(f"{model_dir}: no model.safetensors (only safetensors is read)")


def init_model(
    model_dir: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    config: InitConfig | None = None,
    *,
    overwrite: bool = False,
) -> InitReport:
    """Write ``out_dir``: the model of ``model_dir`` with embeddings for ``tokenizer_dir``.

    The output is a self-contained HF model dir: weights, ``config.json`` with the new
    ``vocab_size``, the other config files, and the new tokenizer's files.
    """
    config = config or InitConfig()
    model_dir, tokenizer_dir = Path(model_dir), Path(tokenizer_dir)
    check_output_dir(Path(out_dir), overwrite=overwrite, inputs=[model_dir, tokenizer_dir])
    start = time.perf_counter()
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise TokenizerExpandError(f"{model_dir}: no config.json (not an HF model dir)")
    model_cfg = json.loads(cfg_path.read_text())
    rows = int(model_cfg["vocab_size"])
    old_tok_size = old_vocab_size(model_dir)
    if rows < old_tok_size:
        raise TokenizerExpandError(
            f"{model_dir}: the model has {rows} embedding rows but its tokenizer has "
            f"{old_tok_size} tokens; they must match"
        )
    subs, new_size = subtoken_ids(model_dir, tokenizer_dir, rows)
    if new_size < rows:
        raise TokenizerExpandError(
            f"{tokenizer_dir} has {new_size} tokens, fewer than the model's {rows} rows"
        )
    tied = bool(model_cfg.get("tie_word_embeddings", False))
    files = _weight_files(model_dir)
    changed: list[str] = []
    with atomic_output_dir(
        Path(out_dir), overwrite=overwrite, inputs=[model_dir, tokenizer_dir], kind="model"
    ) as tmp:
        sizes = {}
        for path in files:
            sizes[path.name] = _rewrite_shard(path, tmp / path.name, subs, rows, config, changed)
        if not changed:
            raise TokenizerExpandError(f"{model_dir}: no {INPUT_NAMES[0]} tensor found")
        _write_configs(model_dir, tokenizer_dir, tmp, model_cfg, new_size, sizes)
        write_spellings(tmp, rows, subs)
        if config.method is InitMethod.FREQ_OUT:
            from llamaforge_tokenizer.freq_out import calibrate_output_rows

            calibrate_output_rows(
                tmp,
                rows,
                config.corpus,
                subs,
                max_docs=config.corpus_docs,
                context=config.context,
            )
            tied = False
            changed.append("lm_head.weight")
    return InitReport(
        old_rows=rows,
        new_rows=new_size,
        tied=tied,
        matrices=changed,
        method=config.method.value,
        seconds=time.perf_counter() - start,
    )


def write_spellings(out: Path, first_new: int, spellings: list[list[int]]) -> None:
    """``out/expansion.json``: where the new rows start and the old ids that spell each new
    id (``[]`` for a special token) — the trainer's ``share_spelling`` reads it."""
    data = {"first_new": first_new, "spellings": spellings}
    (out / SPELLINGS_FILE).write_text(json.dumps(data, separators=(",", ":")) + "\n")


def _rewrite_shard(
    src: Path, dst: Path, subs, rows: int, config: InitConfig, changed: list[str]
) -> int:
    infos, meta, data_start = read_header(src)
    pending = []
    for info in sorted(infos.values(), key=lambda i: i.start):
        if info.name in INPUT_NAMES + OUTPUT_NAMES:
            if info.shape[0] != rows:
                raise TokenizerExpandError(
                    f"{src.name}: {info.name} has {info.shape[0]} rows but config.json says "
                    f"vocab_size={rows}"
                )
            shape = (info.shape[0] + len(subs), *info.shape[1:])
            nbytes = info.nbytes // info.shape[0] * shape[0]

            def make(info=info):
                return _expand_matrix(src, data_start, info, subs, config)

            pending.append(Pending(info.name, info.dtype, shape, nbytes, make=make))
            changed.append(info.name)
        else:
            pending.append(
                Pending(
                    info.name,
                    info.dtype,
                    info.shape,
                    info.nbytes,
                    source=(src, data_start + info.start),
                )
            )
    write_file(dst, pending, meta)
    return sum(p.nbytes for p in pending)


def _expand_matrix(src: Path, data_start: int, info, subs, config: InitConfig):
    import torch

    if info.dtype not in _TORCH_DTYPES:
        raise TokenizerExpandError(f"{info.name}: dtype {info.dtype} is not supported")
    dtype = getattr(torch, _TORCH_DTYPES[info.dtype])
    rows, dim = info.shape
    new = torch.empty((rows + len(subs), dim), dtype=dtype)
    with src.open("rb") as fh:
        fh.seek(data_start + info.start)
        fh.readinto(memoryview(new[:rows].view(torch.uint8).numpy()).cast("B"))
    old = new[:rows]
    mean_all = torch.zeros(dim, dtype=torch.float32)
    for lo in range(0, rows, config.chunk_rows):
        mean_all += old[lo : lo + config.chunk_rows].float().sum(0)
    mean_all /= rows
    noise_std = 0.0
    if config.method is InitMethod.NOISY_MEAN:
        sq = sum(
            float(((old[lo : lo + config.chunk_rows].float() - mean_all) ** 2).sum())
            for lo in range(0, rows, config.chunk_rows)
        )
        noise_std = config.noise_scale * (sq / (rows * dim)) ** 0.5
    gen = torch.Generator().manual_seed(config.seed)
    for lo in range(0, len(subs), config.chunk_rows):
        chunk = subs[lo : lo + config.chunk_rows]
        flat = [i for ids in chunk for i in ids if i < rows]
        owner = [k for k, ids in enumerate(chunk) for i in ids if i < rows]
        acc = torch.zeros((len(chunk), dim), dtype=torch.float32)
        if flat:
            acc.index_add_(0, torch.tensor(owner), old[torch.tensor(flat)].float())
        counts = (
            torch.bincount(torch.tensor(owner, dtype=torch.long), minlength=len(chunk)).float()
            if owner
            else torch.zeros(len(chunk))
        )
        acc /= counts.clamp(min=1).unsqueeze(1)
        acc[counts == 0] = mean_all
        if noise_std:
            acc += torch.randn(acc.shape, generator=gen) * noise_std
        new[rows + lo : rows + lo + len(chunk)] = acc.to(dtype)
    return new.view(torch.uint8).numpy().reshape(-1)


def _write_configs(
    model_dir: Path,
    tokenizer_dir: Path,
    out: Path,
    model_cfg: dict,
    new_size: int,
    sizes: dict[str, int],
) -> None:
    # where the new rows start: the trainer's `new-embeddings` stage trains only those
    model_cfg = dict(
        model_cfg, vocab_size=new_size, expanded_from_vocab_size=model_cfg["vocab_size"]
    )
    (out / "config.json").write_text(json.dumps(model_cfg, indent=2) + "\n")
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = sum(sizes.values())
        (out / index.name).write_text(json.dumps(data, indent=2) + "\n")
    # a MANIFEST.json lists the input's files and their hashes (the asset cache writes one):
    # it would be wrong for the files written here
    skip = {"config.json", index.name, "MANIFEST.json", *TOKENIZER_FILES}
    for path in model_dir.iterdir():
        if path.is_file() and path.name not in skip and not path.name.endswith(".safetensors"):
            shutil.copyfile(path, out / path.name)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out / name)
