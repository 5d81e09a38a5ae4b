"""The ``3d`` plugin (ColossalAI's HybridParallelPlugin) applied to our packed-loss wrapper.

ShardFormer picks a policy by the class of the module handed to the Booster; ours is
``PackedCausalLM``, which it does not know. ``PackedLlamaPolicy`` is ColossalAI's own LLaMA
causal-LM policy pointed at the wrapped HF model: tensor-parallel linears, vocabulary-parallel
embedding and LM head, sequence parallelism, fused RMSNorm where apex is installed. Two things
are kept ours:

* attention: the policy's flash-attention replacement is *not* enabled (its ColoAttention
  knows padding, not documents inside a packed row). The HF attention runs per document
  (``docwise``, spans from the position-id restarts it is handed), or transformers'
  flash-attn varlen path from the same restarts, or with the additive block-diagonal causal
  mask (``sdpa``); with sequence parallelism ShardFormer's own attention replaces it and takes
  only a mask, so the block mask it is.
* the loss: our chunked cross-entropy, made vocabulary-parallel (see ``packed.py``).

Pipeline parallelism (``pp > 1``, 1F1B): ColossalAI's own stage forward replaces the HF
*causal-LM* forward, which computes full logits and knows nothing of our loss. We never call
that one: the policy gives the LLaMA *body* ShardFormer's stage forward instead (embeddings on
the first stage, its slice of the decoder layers, the final norm on the last), and the wrapper
(``PackedCausalLM`` with a ``stage_manager``) runs it and, on the last stage, our loss.

``cpu_accelerator_compat`` fills in what ColossalAI 0.5.0's CPU accelerator lacks for
ShardFormer (its RNG calls raise or call ``torch.get_rng_state`` wrongly), so that the ``3d``
plugin runs on CPU with gloo — the tests use it with 2 processes. It is applied only when no
CUDA device is visible and never changes CUDA behaviour.
"""

from __future__ import annotations

import torch


def cpu_accelerator_compat() -> None:
    """Give ColossalAI's CPU accelerator the RNG and sync calls ShardFormer makes (idempotent)."""
    if torch.cuda.is_available():
        return
    from colossalai.accelerator.cpu_accelerator import CpuAccelerator

    if getattr(CpuAccelerator, "_llamaforge_compat", False):
        return

    def get_rng_state(self, device=None):
        return torch.get_rng_state()

    def set_rng_state(self, new_state, device=None):
        torch.set_rng_state(new_state)

    def manual_seed(self, seed):
        torch.manual_seed(seed)

    def synchronize(self, device=None):
        return None

    CpuAccelerator.get_rng_state = get_rng_state
    CpuAccelerator.set_rng_state = set_rng_state
    CpuAccelerator.manual_seed = manual_seed
    CpuAccelerator.manual_seed_all = manual_seed
    CpuAccelerator.initial_seed = lambda self: torch.initial_seed()
    CpuAccelerator.synchronize = synchronize
    CpuAccelerator.empty_cache = lambda self: None
    CpuAccelerator._llamaforge_compat = True


def p2p_compat() -> None:
    """ColossalAI 0.5.0's pipeline send/recv asks ``c10d.Backend.HCCL`` (Ascend) whenever the
    group is not NCCL; torch 2.5.1 has no such name, so every gloo pipeline crashed. Give it
    the name and an "is it available" answer of no (idempotent; NCCL never reaches them)."""
    from torch.distributed import distributed_c10d as c10d

    if not hasattr(c10d.Backend, "HCCL"):
        c10d.Backend.HCCL = "hccl"
    if not hasattr(torch.distributed, "is_hccl_available"):
        torch.distributed.is_hccl_available = lambda: False


def grad_norm_compat() -> None:
    """ColossalAI 0.5.0's hybrid-parallel optimizers (ZeRO 0: plain and mixed precision)
    return a zero gradient norm early on a rank that holds no gradient — skipping the
    all-reduces its tensor / pipeline peers are waiting in. A pipeline stage with nothing
    trainable (an embeddings-only stage with pp ≥ 3: the middle stages hold only frozen
    layers) hung every rank at its first step. Such a rank now joins them with a zero
    (idempotent). The ZeRO optimizer has the same early return; the config refuses that case.
    """
    from colossalai.accelerator import get_accelerator
    from colossalai.booster.plugin import hybrid_parallel_plugin as hybrid

    for cls in (hybrid.HybridParallelNaiveOptimizer, hybrid.HybridParallelAMPOptimizer):
        original = cls._compute_grad_norm
        if getattr(original, "_llamaforge_compat", False):
            continue

        def compute_grad_norm(self, param_gradient_pairs, norm_type=2, _original=original):
            if not param_gradient_pairs:  # a (parameter, gradient) pair of one zero
                zero = torch.zeros(1, device=get_accelerator().get_current_device())
                param_gradient_pairs = [(zero, zero)]
            return _original(self, param_gradient_pairs, norm_type)

        compute_grad_norm._llamaforge_compat = True
        cls._compute_grad_norm = compute_grad_norm


def packed_llama_policy():
    """A ShardFormer policy instance for a :class:`PackedCausalLM` around a LLaMA causal LM."""
    from colossalai.shardformer.policies.llama import LlamaForCausalLMPolicy

    class PackedLlamaPolicy(LlamaForCausalLMPolicy):
        """LLaMA's causal-LM policy, pointed at the HF model inside the wrapper."""

        def set_model(self, model):
            self.wrapper = model
            super().set_model(model.base())

        def module_policy(self):
            from colossalai.shardformer.modeling.llama import LlamaPipelineForwards
            from transformers.models.llama.modeling_llama import LlamaModel

            policy = super().module_policy()
            if self.pipeline_stage_manager is not None:
                # the body's stage forward; the causal-LM one set above is never called
                self.set_pipeline_forward(
                    model_cls=LlamaModel,
                    new_forward=LlamaPipelineForwards.llama_model_forward,
                    policy=policy,
                )
            return policy

        def preprocess(self):
            super().preprocess()
            return self.wrapper

        def postprocess(self):
            return self.wrapper

    return PackedLlamaPolicy()
