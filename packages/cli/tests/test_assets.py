"""Real assets: LLaMA-2 vocabulary reproduces llama.cpp's cases; cache integrity; clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamaforge_cli.assets import (
    AssetError,
    asset_dir,
    cache_root,
    ensure_asset,
    get_spec,
    read_vocab_cases,
    verify_asset,
)
from llamaforge_cli.assets.builders import CASES_INP, CASES_OUT
from llamaforge_cli.assets.download import download_distribution, stamp
from llamaforge_cli.main import main


def test_llama2_tokenizer_reproduces_llama_cpp_cases(asset):
    import sentencepiece as spm

    folder = asset("llama2-tokenizer")
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    assert sp.get_piece_size() == 32000
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    cases = read_vocab_cases(folder / CASES_INP, folder / CASES_OUT)
    assert len(cases) >= 46
    failures = [(text, ids, sp.encode(text)) for text, ids in cases if sp.encode(text) != ids]
    assert failures == []


def test_llama2_tokenizer_loads_in_transformers_slow_class(asset):
    from transformers import AutoTokenizer

    folder = asset("llama2-tokenizer")
    tok = AutoTokenizer.from_pretrained(folder, use_fast=False)
    cases = read_vocab_cases(folder / CASES_INP, folder / CASES_OUT)
    assert [tok.encode(t, add_special_tokens=False) for t, _ in cases] == [ids for _, ids in cases]
    assert tok.encode("Hello")[0] == 1  # BOS added by default, as LLaMA-2's tokenizer does


def test_corpora_are_split_deterministically(asset):
    for name in ("people-daily", "botchan", "lee-news", "chinese-reviews"):
        folder = asset(name)
        train = (folder / "train.txt").read_text(encoding="utf-8").splitlines()
        held = (folder / "heldout.txt").read_text(encoding="utf-8").splitlines()
        assert len(held) * 8 < len(train) < len(held) * 10, name
        assert not set(held) & set(train[:50]), name
    people = (asset("people-daily") / "train.txt").read_text(encoding="utf-8")
    assert "/n" not in people and "迈向充满希望的新世纪" in people
    assert len(people) > 1_000_000


def test_unknown_asset_names_the_close_ones():
    with pytest.raises(AssetError, match="Did you mean llama2-tokenizer"):
        ensure_asset("llama2-tokeniser")


def test_unknown_asset_on_the_cli_is_one_red_line(capsys):
    assert main(["assets", "fetch", "smollm3"]) == 2
    out = capsys.readouterr().err
    assert "unknown asset 'smollm3'" in out and "Traceback" not in out


def _seed_cache_with_download(tmp_path: Path, name: str) -> Path:
    """A fresh cache root that already holds the (real) downloaded distribution of ``name``."""
    real = ensure_asset(name)  # the real cache, so the download exists
    manifest = json.loads((real / "MANIFEST.json").read_text())
    src_downloads = cache_root() / "downloads"
    root = tmp_path / "cache"
    for folder in src_downloads.iterdir():
        if folder.name.startswith(manifest["source"].replace("==", "_")):
            shutil.copytree(folder, root / "downloads" / folder.name)
    return root


def test_corrupt_cached_file_is_detected_and_rebuilt(tmp_path):
    root = _seed_cache_with_download(tmp_path, "jieba-dict")
    folder = ensure_asset("jieba-dict", root=root)
    good = (folder / "dict.txt").read_bytes()
    (folder / "dict.txt").write_bytes(good[:1000] + b"garbage")
    assert "corrupt" in verify_asset("jieba-dict", root)
    steps: list[str] = []
    again = ensure_asset("jieba-dict", root=root, step=steps.append)
    assert (again / "dict.txt").read_bytes() == good
    assert verify_asset("jieba-dict", root) is None
    assert any("corrupt" in s for s in steps)


TOGETHER = """
import sys, time
from pathlib import Path
me, other = Path(sys.argv[1]), Path(sys.argv[2])
me.touch()
while not other.exists():  # start together
    time.sleep(0.01)
"""


def _run_together(script: str, tmp_path: Path, *args: str) -> list[str]:
    """Run ``script`` (Python, reading ``sys.argv[3:]``) in two processes that start its work
    at the same moment; their standard outputs. Both must exit 0."""
    ready = [tmp_path / "ready-0", tmp_path / "ready-1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TOGETHER + script, str(ready[i]), str(ready[1 - i]), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    return outs


FETCH = """
import json
from llamaforge_cli.assets import ensure_asset
steps = []
folder = ensure_asset("jieba-dict", root=Path(sys.argv[3]), step=steps.append)
print(json.dumps([str(folder), steps]))
"""


def test_two_processes_fetching_at_once_build_the_asset_once(tmp_path):
    root = _seed_cache_with_download(tmp_path, "jieba-dict")
    results = [json.loads(out) for out in _run_together(FETCH, tmp_path, str(root))]
    assert {folder for folder, _ in results} == {str(asset_dir("jieba-dict", root))}
    builds = [steps for _, steps in results if any("converting" in s for s in steps)]
    assert len(builds) == 1  # the other process waited, found it built, and used it
    assert verify_asset("jieba-dict", root) is None


DOWNLOAD = """
import os
from llamaforge_cli.assets import get_spec
from llamaforge_cli.assets.download import download_distribution
archive = download_distribution(get_spec("botchan").source, Path(sys.argv[3]))
print(os.stat(archive.parent).st_ino)
"""


def test_two_processes_downloading_at_once_download_once(tmp_path):
    """Two assets can come from one distribution (SmolLM2's model and tokenizer): fetched by
    two processes at once, the later download replaced the folder the first was reading."""
    inodes = _run_together(DOWNLOAD, tmp_path, str(tmp_path / "downloads"))
    assert inodes[0].strip() == inodes[1].strip()  # one folder, made once and read by both


AGAIN = """
import json
from llamaforge_cli.assets import get_spec
from llamaforge_cli.assets.download import download_distribution, stamp
damaged = tuple(json.loads(sys.argv[4]))
archive = download_distribution(get_spec("botchan").source, Path(sys.argv[3]), replacing=damaged)
print(json.dumps(stamp(archive)))
"""


def test_two_processes_finding_one_damaged_download_fetch_it_once(tmp_path):
    """The second process to find the damage uses the first one's fresh download instead of
    removing the folder the first is reading."""
    downloads = tmp_path / "downloads"
    damaged = download_distribution(get_spec("botchan").source, downloads)
    damaged.write_bytes(damaged.read_bytes()[:100])
    bad = stamp(damaged)
    outs = _run_together(AGAIN, tmp_path, str(downloads), json.dumps(bad))
    stamps = {tuple(json.loads(out)) for out in outs}
    assert len(stamps) == 1 and bad not in stamps  # fetched anew, once, used by both
    assert stamp(download_distribution(get_spec("botchan").source, downloads)) in stamps
    assert next(iter(stamps))[1] > 100


@pytest.mark.slow
def test_corrupt_download_is_fetched_again(tmp_path):
    root = _seed_cache_with_download(tmp_path, "jieba-dict")
    (archive,) = (root / "downloads").rglob("*.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    folder = ensure_asset("jieba-dict", root=root)
    assert verify_asset("jieba-dict", root) is None
    assert (folder / "dict.txt").stat().st_size > 1_000_000


def test_no_network_gives_one_clear_message(tmp_path, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "3")
    with pytest.raises(AssetError, match="could not download sentencepiece==0.2.3 with pip"):
        ensure_asset("botchan", root=tmp_path / "cache")
    assert not asset_dir("botchan", tmp_path / "cache").exists()


@pytest.mark.slow
def test_smollm2_answers_paris(asset):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = asset("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert model.config.rope_theta == 100000
    assert tok.encode("Hi")[0] != tok.convert_tokens_to_ids("<|im_start|>")  # no stray BOS
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    out = model.generate(ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_smollm2_tokenizer_is_the_full_dirs_tokenizer_without_weights(asset):
    """The small asset (what can travel where the 89 MB distribution cannot) holds exactly
    the tokenizer files of the full SmolLM2 dir, byte for byte."""
    small, full = asset("smollm2-tokenizer"), asset("smollm2-135m")
    files = sorted(p.name for p in small.iterdir() if p.name != "MANIFEST.json")
    assert files == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert all((small / f).read_bytes() == (full / f).read_bytes() for f in files)
    assert sum((small / f).stat().st_size for f in files) < 8_000_000


def test_llama3_tokenizer_reproduces_llama_cpp_cases(asset):
    from tokenizers import Tokenizer

    folder = asset("llama3-tokenizer")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tok.get_vocab_size() == 128256
    cases = read_vocab_cases(folder / CASES_INP, folder / CASES_OUT)
    assert len(cases) >= 46
    got = [tok.encode(text, add_special_tokens=False).ids for text, _ in cases]
    assert got == [ids for _, ids in cases]


@pytest.mark.parametrize("name", ["smollm2-135m", "llama3-tokenizer"])
def test_byte_level_bpe_dirs_load_as_they_are_written(name, asset):
    """The generic fast class (transformers 5 would rebuild a LlamaTokenizer's pre-tokenizer),
    returning only what LLaMA models take: ``model(**tokenizer(text))`` must work."""
    import json

    from transformers import AutoTokenizer

    folder = asset(name)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    tok = AutoTokenizer.from_pretrained(folder)
    assert list(tok("人民日报 news")) == ["input_ids", "attention_mask"]
    text = "  two leading spaces, 12345 digits\n\n中文"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
