"""The vLLM backend: vLLM schedules and runs the batch, this package keeps its API around it.

vLLM (paged KV cache, prefix caching, its own continuous batching) produces token ids; the
shared ``StreamingEngine`` turns them into streamed text exactly as the transformers backend
does (stop strings held back, EOS, ``max_tokens``), so both backends answer alike. A sequence
that finishes or is cancelled on our side is aborted in vLLM at once.

vLLM pins its own torch and transformers, so it lives in its own virtualenv — see the package
README. Weights are loaded as safetensors only; remote code stays off unless asked.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from llamaforge_serve.errors import ServeError
from llamaforge_serve.streaming import Sequence, StreamingEngine


def vllm_available() -> bool:
    """vLLM importable in this environment."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def parse_vllm_args(items: list[str] | None) -> dict:
    """``--vllm-arg KEY=VALUE`` options as keyword arguments for vLLM (values read as JSON when
    they parse: numbers, booleans; strings otherwise)."""
    import json

    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ServeError(f"--vllm-arg {item!r}: expected KEY=VALUE")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except ValueError:
            out[key.replace("-", "_")] = value
    return out


class VllmEngine(StreamingEngine):
    """``StreamingEngine`` over ``vllm.LLMEngine``, stepped from the engine thread."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_model_len: int | None = None,
        **engine_args,
    ):
        if not vllm_available():
            raise ServeError(
                "backend 'vllm' needs vLLM, which is not installed in this environment; "
                "see packages/serve/README.md (it runs from its own virtualenv)"
            )
        # Our thread drives the steps; vLLM's separate engine-core process would only add a
        # hop. An explicit setting in the environment wins.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import EngineArgs, LLMEngine

        try:
            args = EngineArgs(
                model=str(model_dir),
                dtype=dtype,
                load_format="safetensors",
                trust_remote_code=trust_remote_code,
                max_num_seqs=max_batch,
                max_model_len=max_model_len,
                enable_prefix_caching=True,
                seed=0,
                **engine_args,
            )
        except TypeError as exc:  # an unknown engine argument
            raise ServeError(f"vLLM refused the engine arguments: {exc}") from None
        self.llm = LLMEngine.from_engine_args(args)
        tokenizer = self.llm.get_tokenizer()
        config = self.llm.vllm_config.model_config
        self.max_model_len = config.max_model_len
        eos = {tokenizer.eos_token_id}
        generation = config.try_get_generation_config() or {}
        extra = generation.get("eos_token_id")
        eos |= set(extra if isinstance(extra, list) else [extra] if extra is not None else [])
        super().__init__(
            tokenizer,
            max_batch=max_batch,
            max_queue=max_queue,
            eos_ids=[e for e in eos if e is not None],
        )
        self._ids = itertools.count()
        self._by_id: dict[str, Sequence] = {}
        self.start()

    def _params(self, seq: Sequence):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = seq.sampling
        return SamplingParams(
            temperature=max(s.temperature, 0.0),
            top_p=s.top_p,
            top_k=s.top_k if s.top_k > 0 else 0,
            seed=s.seed,
            max_tokens=s.max_tokens,
            stop_token_ids=sorted(self.eos),
            detokenize=False,  # text and stop strings are ours, as in the other backend
            output_kind=RequestOutputKind.DELTA,
        )

    def _step(self) -> bool:
        for seq in self._take_pending():
            rid = f"lf-{next(self._ids)}"
            self._by_id[rid] = seq
            self.llm.add_request(rid, {"prompt_token_ids": list(seq.prompt_ids)}, self._params(seq))
            self.active.append(seq)
        self._abort_gone()
        if not self.active:
            return False
        self.stats["steps"] += 1
        self.stats["batch_tokens"] += len(self.active)
        for out in self.llm.step():
            seq = self._by_id.get(out.request_id)
            if seq is None or seq.finished or seq.cancelled:
                continue
            for token in out.outputs[0].token_ids:
                self._accept(seq, token)
                if seq.finished:
                    break
            if out.finished and not seq.finished:  # vLLM stopped first (e.g. its own length cap)
                seq.finished = True
                reason = "length" if out.outputs[0].finish_reason == "length" else "stop"
                seq.emit(seq.text[seq.emitted :], reason, 0)
        self._abort_gone()
        return True

    def _abort_gone(self) -> None:
        """Abort in vLLM what finished or was cancelled here; drop it from the batch."""
        keep = set(self._retire())
        gone = {id(s) for i, s in enumerate(self.active) if i not in keep}
        if not gone:
            return
        ids = [rid for rid, s in self._by_id.items() if id(s) in gone]
        self.llm.abort_request(ids)
        for rid in ids:
            del self._by_id[rid]
        self.active = [s for i, s in enumerate(self.active) if i in keep]

    def _reset(self) -> None:
        if self._by_id:
            self.llm.abort_request(list(self._by_id))
        self._by_id.clear()
