"""Real work for the tokenizer set, run with the Python of a virtualenv that holds only
llamaforge-tokenizer and its declared dependencies: learn 300 pieces from People's Daily,
expand LLaMA-2's tokenizer with them and measure the compression — all without torch.

    python tokenizer.py BASE_TOKENIZER_DIR CORPUS.txt SCRATCH_DIR
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("torch") is not None:
    sys.exit("torch is installed")

from llamaforge_tokenizer import LearnConfig, expand_tokenizer, learn_pieces, measure
from llamaforge_tokenizer.pieces import write_pieces

base, corpus, out = map(Path, sys.argv[1:4])
learned = learn_pieces(base, [corpus], LearnConfig(num_pieces=300, max_corpus_chars=50000))
write_pieces(out / "p.jsonl", [c.to_dict() for c in learned.candidates])
report = expand_tokenizer(base, out / "p.jsonl", out / "tok")
rows = measure({"old": base, "new": out / "tok"}, {"zh": [corpus]}, max_chars=20000)
old, new = (row.tokens for row in rows)
if report.added != 300 or not new < old:
    sys.exit(f"expected 300 pieces added and fewer tokens, got {report.added}: {old} → {new}")
print(f"learned and added {report.added} pieces without torch; People's Daily {old} → {new} tokens")
