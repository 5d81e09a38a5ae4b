"""Embedding initialisation on the real SmolLM2 (tied embeddings) — needs the [model] extra."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from llamaforge_tokenizer import TokenizerExpandError, init_model  # noqa: E402
from llamaforge_tokenizer.embeddings import InitConfig  # noqa: E402
from llamaforge_tokenizer.subtokens import subtoken_ids  # noqa: E402

EMBED = "model.embed_tokens.weight"


@pytest.fixture(scope="module")
def initialised(smollm2_expanded, asset, tmp_path_factory):
    out = tmp_path_factory.mktemp("init") / "model"
    report = init_model(asset("smollm2-135m"), smollm2_expanded["new"], out)
    return {
        "out": out,
        "report": report,
        "base": asset("smollm2-135m"),
        "tok": smollm2_expanded["new"],
    }


def _embed(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return f.get_tensor(EMBED)


def test_new_rows_are_mean_of_subtoken_rows(initialised):
    old_e, new_e = _embed(initialised["base"]), _embed(initialised["out"])
    assert new_e.dtype == old_e.dtype == torch.bfloat16
    assert new_e.shape[0] == initialised["report"].new_rows
    assert torch.equal(new_e[: old_e.shape[0]], old_e)
    old_tok = Tokenizer.from_file(str(initialised["base"] / "tokenizer.json"))
    new_vocab = Tokenizer.from_file(str(initialised["tok"] / "tokenizer.json")).get_vocab()
    checked = 0
    for token, i in sorted(new_vocab.items(), key=lambda kv: kv[1]):
        if i < old_e.shape[0] or checked >= 50:
            continue
        sub = [t.id for t in old_tok.model.tokenize(token)]
        expected = old_e[sub].float().mean(0).to(torch.bfloat16)
        assert torch.equal(new_e[i], expected), token
        checked += 1
    assert checked == 50


def test_config_and_tokenizer_travel_with_the_model(initialised):
    cfg = json.loads((initialised["out"] / "config.json").read_text())
    assert cfg["vocab_size"] == initialised["report"].new_rows
    assert cfg["expanded_from_vocab_size"] == initialised["report"].old_rows  # new rows start
    assert initialised["report"].tied and initialised["report"].matrices == [EMBED]
    assert (initialised["out"] / "tokenizer.json").read_bytes() == (
        initialised["tok"] / "tokenizer.json"
    ).read_bytes()
    assert (initialised["out"] / "generation_config.json").is_file()
    # the asset cache's list of the input's files and hashes does not describe the output
    assert (initialised["base"] / "MANIFEST.json").is_file()
    assert not (initialised["out"] / "MANIFEST.json").exists()


def test_spellings_of_the_new_pieces_are_written(initialised):
    report = initialised["report"]
    data = json.loads((initialised["out"] / "expansion.json").read_text())
    assert data["first_new"] == report.old_rows
    assert len(data["spellings"]) == report.new_rows - report.old_rows
    old_tok = Tokenizer.from_file(str(initialised["base"] / "tokenizer.json"))
    vocab = Tokenizer.from_file(str(initialised["tok"] / "tokenizer.json")).get_vocab()
    by_id = {i: token for token, i in vocab.items()}
    for i in range(report.old_rows, report.new_rows, 997):
        want = [t.id for t in old_tok.model.tokenize(by_id[i])]
        assert data["spellings"][i - report.old_rows] == want, by_id[i]


def test_english_logits_unchanged_and_generates(initialised):
    base = AutoModelForCausalLM.from_pretrained(initialised["base"], torch_dtype=torch.float32)
    new = AutoModelForCausalLM.from_pretrained(initialised["out"], torch_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(initialised["out"])
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert int(ids.max()) < 49152  # old ids only
    with torch.no_grad():
        a = base(ids).logits
        b = new(ids).logits
    assert torch.allclose(a, b[..., : a.shape[-1]], atol=1e-4)
    out = new.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    zh = tok("中华人民共和国", return_tensors="pt").input_ids
    assert int(zh.max()) >= 49152
    with torch.no_grad():
        assert torch.isfinite(new(zh).logits).all()


def test_noisy_mean_is_near_the_mean(initialised, tmp_path):
    out = tmp_path / "noisy"
    init_model(
        initialised["base"],
        initialised["tok"],
        out,
        InitConfig(method="noisy-mean", noise_scale=0.1, seed=1),
    )
    mean, noisy = _embed(initialised["out"]).float(), _embed(out).float()
    n = _embed(initialised["base"]).shape[0]
    assert torch.equal(mean[:n], noisy[:n])
    diff = (noisy[n:] - mean[n:]).std() / mean[:n].std()
    assert 0.05 < float(diff) < 0.2


def test_bad_inputs(initialised, asset, tmp_path):
    with pytest.raises(TokenizerExpandError, match="already exists"):
        init_model(initialised["base"], initialised["tok"], initialised["out"])
    # A tokenizer that is not an expansion of the model's tokenizer.
    with pytest.raises(TokenizerExpandError, match="different kinds of tokenizer"):
        init_model(initialised["base"], asset("llama2-tokenizer"), tmp_path / "x")
    # A model whose vocabulary size doesn't match its tokenizer.
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in initialised["base"].iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "config.json").unlink()
    cfg = json.loads((initialised["base"] / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(dict(cfg, vocab_size=1000)))
    with pytest.raises(TokenizerExpandError, match="1000 embedding rows but its tokenizer has"):
        init_model(broken, initialised["tok"], tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_public_init_model_stays_the_function_once_its_module_is_loaded():
    """The package's ``init_model`` must not be replaced by a submodule of the same name
    (it was, once the implementation module had been imported: 'module' is not callable)."""
    import llamaforge_tokenizer
    import llamaforge_tokenizer.embeddings  # noqa: F401 - loads the implementation

    assert callable(llamaforge_tokenizer.init_model)


def test_frequency_logit_shift_matches_a_plain_computation():
    """freq-out's vectorised shift against a row-by-row reference: each new row moves along
    h̄ until h̄ · w = log(count) + C, C the median offset of the old tokens seen ≥ 5 times."""
    from llamaforge_tokenizer.freq_out import frequency_logit_shift

    gen = torch.Generator().manual_seed(0)
    rows, dim, first_new = 40, 8, 30
    w = torch.randn(rows, dim, generator=gen)
    hbar = torch.randn(dim, generator=gen)
    counts = torch.randint(0, 50, (rows,), generator=gen)
    counts[first_new] = 0  # a new piece the corpus never shows: counted once
    offsets = sorted(
        float(w[i] @ hbar) - float(torch.tensor(float(counts[i])).log())
        for i in range(first_new)
        if counts[i] >= 5
    )
    n = len(offsets)
    median = offsets[(n - 1) // 2]  # torch's median: the lower middle value
    got = frequency_logit_shift(hbar, w, counts, first_new)
    for k in range(rows - first_new):
        i = first_new + k
        target = float(torch.tensor(float(max(int(counts[i]), 1))).log()) + median
        step = (target - float(w[i] @ hbar)) / float(hbar @ hbar)
        assert torch.allclose(got[k], w[i] + step * hbar, atol=1e-5)
        assert abs(float(got[k] @ hbar) - target) < 1e-4
    with pytest.raises(TokenizerExpandError, match="no old token occurs 5 times"):
        frequency_logit_shift(hbar, w, torch.zeros(rows, dtype=torch.long), first_new)


def test_displaced_logit_shift_matches_a_plain_computation():
    """Each old row whose count the new pieces took moves along h̄ by log(now / before), the
    count before being its count now plus its uses in the spellings of the new pieces' counts;
    rows seen < 5 times before, or not displaced, stay."""
    from llamaforge_tokenizer.freq_out import displaced_logit_shift

    gen = torch.Generator().manual_seed(1)
    rows, dim, first_new = 12, 6, 8
    w = torch.randn(rows, dim, generator=gen)
    hbar = torch.randn(dim, generator=gen)
    counts = torch.tensor([50, 3, 0, 9, 2, 100, 1, 0, 20, 4, 0, 7])
    spellings = [[0, 1], [2, 2, 3], [], [0, 6]]  # ids 8..11; id 10 is special (no spelling)
    before = {0: 50 + 20 + 7, 1: 3 + 20, 2: 0 + 2 * 4, 3: 9 + 4, 6: 1 + 7}
    got = displaced_logit_shift(hbar, w, counts, spellings, first_new)
    assert got.shape == (first_new, dim)
    for i in range(first_new):
        now = max(int(counts[i]), 1)
        shift = math.log(now / before[i]) if before.get(i, 0) >= 5 else 0.0
        want = w[i] + shift / float(hbar @ hbar) * hbar
        assert torch.allclose(got[i], want, atol=1e-5), i
        if shift:
            assert abs(float((got[i] - w[i]) @ hbar) - shift) < 1e-4


@pytest.mark.slow
def test_freq_out_unties_and_moves_the_output_rows(initialised, asset, tmp_path):
    """On real SmolLM2 and People's Daily: input rows stay the mean, the new output rows move,
    old output rows move only where the new pieces took their text (the bytes of covered
    characters), all along one direction, and the untrained expanded model predicts
    held-out Chinese better than the mean initialisation does."""
    from llamaforge_tokenizer.freq_out import read_documents

    corpus = asset("people-daily") / "train.txt"
    out = tmp_path / "freq-out"
    report = init_model(
        initialised["base"],
        initialised["tok"],
        out,
        InitConfig(method="freq-out", corpus=[corpus], corpus_docs=400),
    )
    assert not report.tied and report.matrices == [EMBED, "lm_head.weight"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False and cfg["torch_dtype"] == "bfloat16"
    n = report.old_rows
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        emb, head = f.get_tensor(EMBED), f.get_tensor("lm_head.weight")
    mean = _embed(initialised["out"])
    assert torch.equal(emb, mean) and not torch.equal(head[n:], mean[n:])
    moved = (head[:n] != mean[:n]).any(dim=1).nonzero().squeeze(1).tolist()
    spelled = {i for spelling in subtoken_ids(initialised["base"], out, n)[0] for i in spelling}
    assert moved and set(moved) <= spelled  # a token no piece uses (English) is untouched
    latin = AutoTokenizer.from_pretrained(out)(" the", add_special_tokens=False).input_ids
    assert torch.equal(head[latin], mean[latin])
    steps = head[moved].float() - mean[moved].float()
    steps = steps / steps.norm(dim=1, keepdim=True)
    assert float((steps @ steps[0]).min()) > 0.8  # along h̄, the same way (bf16-rounded)

    tok = AutoTokenizer.from_pretrained(out)
    docs = read_documents([asset("people-daily") / "heldout.txt"], 8)

    def nll_per_char(folder):
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
        total = 0.0
        with torch.no_grad():
            for d in docs:
                ids = tok(d, return_tensors="pt").input_ids[:, :256]
                total += float(model(ids, labels=ids).loss) * (ids.shape[1] - 1)
        return total / sum(len(d) for d in docs)

    assert nll_per_char(out) < 0.97 * nll_per_char(initialised["out"])
    with pytest.raises(TokenizerExpandError, match="freq-out needs a corpus"):
        InitConfig(method="freq-out")
    with pytest.raises(TokenizerExpandError, match="no such corpus file"):
        InitConfig(method="freq-out", corpus=[tmp_path / "missing.txt"])
