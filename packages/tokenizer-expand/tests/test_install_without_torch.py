"""llamaforge-tokenizer installs and works in a fresh virtualenv that has no torch."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import importlib.util, json, sys
from pathlib import Path
assert importlib.util.find_spec("torch") is None, "torch is installed"
from llamaforge_tokenizer import LearnConfig, expand_tokenizer, learn_pieces, measure
from llamaforge_tokenizer.pieces import write_pieces
base, corpus, out = map(Path, sys.argv[1:4])
res = learn_pieces(base, [corpus], LearnConfig(num_pieces=300, max_corpus_chars=50000))
write_pieces(out / "p.jsonl", [c.to_dict() for c in res.candidates])
rep = expand_tokenizer(base, out / "p.jsonl", out / "tok")
rows = measure({"old": base, "new": out / "tok"}, {"zh": [corpus]}, max_chars=20000)
print(json.dumps({"added": rep.added, "tokens": [r.tokens for r in rows]}))
"""


@pytest.mark.slow
def test_tokenizer_package_without_torch(tmp_path, asset):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            str(ROOT / "packages" / "tokenizer-expand"),
        ],
        check=True,
    )
    out = tmp_path / "work"
    out.mkdir()
    result = subprocess.run(
        [
            python,
            "-c",
            SCRIPT,
            str(asset("llama2-tokenizer")),
            str(asset("people-daily") / "heldout.txt"),
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["added"] == 300 and data["tokens"][1] < data["tokens"][0]
    assert (
        "torch"
        not in subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True)
        .stdout.lower()
        .split()
    )
