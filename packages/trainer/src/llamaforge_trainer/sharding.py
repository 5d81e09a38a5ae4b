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

The fixes ColossalAI 0.5.0 needs on this stack (and on CPU with gloo) are in ``compat.py``.
"""

from __future__ import annotations

from llamaforge_trainer.errors import TrainError


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


def check_model_fits(config, model_config) -> None:
    """Refuse, naming the numbers, a model that the ``3d`` layout of ``config`` (a
    ``TrainConfig``) cannot split: ColossalAI asserts (or, for all-to-all sequence
    parallelism, silently floors the head count) instead."""
    vocab, layers = model_config.vocab_size, model_config.num_hidden_layers
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    if vocab % config.tp:
        raise TrainError(
            f"plugin '3d': the vocabulary ({vocab}) is not a multiple of tp={config.tp}; "
            "ColossalAI 0.5.0 pads it and then cannot save the optimizer state — expand the "
            "tokenizer to a multiple of tp (e.g. learn a few more pieces) or change tp"
        )
    if layers < config.pp:
        raise TrainError(
            f"plugin '3d': the model has {layers} decoder layers, fewer than pp="
            f"{config.pp} pipeline stages; lower pp"
        )
    size, name = config.tp, f"tp={config.tp}"
    if config.sp_group_size > 1:  # all_to_all's sequence group splits the heads too
        size, name = config.tp * config.sp, f"tp × sp = {config.tp} × {config.sp}"
    for what, count in (("attention heads", heads), ("key/value heads", kv_heads)):
        if count % size:
            raise TrainError(
                f"plugin '3d': the model's {count} {what} cannot be split evenly over {name}; "
                f"choose sizes whose product divides {count}"
            )
