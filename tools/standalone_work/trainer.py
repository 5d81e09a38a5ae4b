"""Real work for the trainer set, run with the Python of a virtualenv that holds only
llamaforge-trainer (with llamaforge-datapack) and their declared dependencies — no umbrella
CLI: build a tiny LLaMA, pack People's Daily with data-pack, train two steps with
``python -m llamaforge_trainer`` and check the export.

    python trainer.py TOKENIZER_DIR CORPUS.txt SCRATCH_DIR
"""

import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llamaforge_datapack import PackConfig, Source, TokenizeConfig, pack

tokenizer, corpus, work = map(Path, sys.argv[1:4])
tok = AutoTokenizer.from_pretrained(tokenizer)
config = LlamaConfig(
    vocab_size=len(tok),
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=tok.bos_token_id,
    eos_token_id=tok.eos_token_id,
)
LlamaForCausalLM(config).save_pretrained(work / "model")
tok.save_pretrained(work / "model")
lines = corpus.read_text(encoding="utf-8").splitlines()[:200]
(work / "zh.txt").write_text("\n".join(lines), encoding="utf-8")
manifest = pack(
    [Source(name="zh", inputs=[str(work / "zh.txt")])],
    TokenizeConfig(tokenizer_dir=work / "model", max_length=128),
    PackConfig(out_dir=work / "packed"),
)
recipe = work / "train.toml"
recipe.write_text(
    f'model = "{work / "model"}"\noutput_dir = "{work / "run"}"\n'
    f'[[stages]]\nname = "full"\ndata = ["{work / "packed"}"]\nsteps = 2\n'
)
cmd = [sys.executable, "-m", "llamaforge_trainer", str(recipe)]
done = subprocess.run(cmd, capture_output=True, text=True)
if done.returncode or not (work / "run" / "export" / "model.safetensors").is_file():
    tail = done.stdout[-1500:] + done.stderr[-1500:]
    sys.exit(f"training failed (exit {done.returncode}):\n{tail}")
print(f"packed {manifest.rows} rows, trained 2 steps and exported, without the umbrella CLI")
