"""The vLLM backend of the runner: the same prompts and metrics, vLLM computing them.

Prompts are tokenised by ``PromptRunner`` exactly as for the transformers backend and handed to
vLLM as token ids. Choice scores ask vLLM for the log-probabilities of the answer tokens at the
next position (``logprob_token_ids``); vLLM's prefix cache shares each subject's few-shot
prefix across its questions. Both multiple-choice metrics then read log-probabilities: for the
first-token metric the argmax over the choices is the same as over the logits (one softmax
normaliser per question). Generation is greedy; held-out text is scored with prompt
log-probabilities.

vLLM pins its own torch and transformers: run it from its own virtualenv (see the README).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from llamaforge_eval.errors import EvalError
from llamaforge_eval.runner import ChoiceScores, PromptRunner
from llamaforge_eval.windows import windows


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def parse_vllm_args(items: list[str] | None) -> dict:
    """``--vllm-arg KEY=VALUE`` options as keyword arguments for vLLM (values read as JSON when
    they parse: numbers, booleans; strings otherwise)."""
    import json

    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EvalError(f"--vllm-arg {item!r}: expected KEY=VALUE")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


class VllmRunner(PromptRunner):
    """A ``PromptRunner`` over ``vllm.LLM`` (in this process)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_length: int | None = None,
        dtype: str = "float32",
        **llm_args,
    ):
        if not vllm_available():
            raise EvalError(
                "backend 'vllm' needs vLLM, which is not installed in this environment; "
                "see packages/eval/README.md (it runs from its own virtualenv)"
            )
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise EvalError(f"{model_dir}: not an HF model dir (no config.json)")
        # One process: the runner is driven synchronously, a separate engine-core process
        # would only add a hop. An explicit setting in the environment wins.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        try:
            self.llm = LLM(
                model=str(model_dir),
                dtype=dtype,
                max_model_len=max_length,
                enable_prefix_caching=True,
                load_format="safetensors",
                seed=0,
                **llm_args,
            )
        except TypeError as exc:  # an unknown engine argument
            raise EvalError(f"vLLM refused the engine arguments: {exc}") from None
        self.tok = self.llm.get_tokenizer()
        self.max_length = self.llm.llm_engine.vllm_config.model_config.max_model_len

    def _prompts(self, ids: list[list[int]]) -> list[dict]:
        return [{"prompt_token_ids": list(x)} for x in ids]

    def _next_token_scores(self, prompts: list[list[int]], tokens: list[int]) -> list[ChoiceScores]:
        from vllm import SamplingParams

        wanted = sorted(set(tokens))
        params = SamplingParams(
            max_tokens=1, temperature=0.0, logprobs=len(wanted), logprob_token_ids=wanted
        )
        outs = self.llm.generate(self._prompts(prompts), params, use_tqdm=False)
        scores = []
        for out in outs:
            got = out.outputs[0].logprobs[0]
            values = [float(got[t].logprob) for t in tokens]
            scores.append(ChoiceScores(values, values))
        return scores

    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str]) -> list[str]:
        """Greedy continuations, cut at the first stop string."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop=stop or None)
        outs = self.llm.generate(
            self._prompts([self.encode(p) for p in prompts]), params, use_tqdm=False
        )
        texts = []
        for out in outs:
            text = out.outputs[0].text
            cut = min([text.find(s) for s in stop if s in text], default=len(text))
            texts.append(text[:cut])
        return texts

    def document_nll(self, texts: list[str]) -> list[tuple[float, int]]:
        """Each text's negative log-likelihood (nats) and scored-token count, laid out as the
        transformers backend lays it out (:mod:`llamaforge_eval.windows`)."""
        from vllm import SamplingParams

        window = self.max_length - 1  # room for the one token vLLM must generate
        chunks, owner = [], []
        for i, text in enumerate(texts):
            ids = self.document_ids(text)
            for lo, hi in windows(len(ids), window):
                chunks.append(ids[lo:hi])
                owner.append(i)
        if not chunks:
            raise EvalError("no tokens to score")
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.llm.generate(self._prompts(chunks), params, use_tqdm=False)
        totals, counts = [0.0] * len(texts), [0] * len(texts)
        for i, chunk, out in zip(owner, chunks, outs, strict=True):
            for token, entry in zip(chunk[1:], out.prompt_logprobs[1:], strict=True):
                totals[i] -= float(entry[token].logprob)
                counts[i] += 1
        return list(zip(totals, counts, strict=True))
