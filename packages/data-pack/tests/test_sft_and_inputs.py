"""SFT templates, readers and their errors, the resumable sampler and multi-dir loading."""

from __future__ import annotations

import json

import pytest

from llamaforge_datapack import (
    DataPackError,
    OnError,
    PackConfig,
    ResumableSampler,
    Source,
    TokenizeConfig,
    load_packed,
    pack,
    read_records,
)
from llamaforge_datapack.records import ReadStats
from llamaforge_datapack.tokenize import IGNORE, Encoder, load_tokenizer


def _conversation(*turns):
    return read_records_from([{"messages": [{"from": r, "content": c} for r, c in turns]}])


def read_records_from(rows):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.jsonl"
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
        return list(read_records([path]))


def _learned_text(tok, doc):
    return tok.decode(
        [t for t, lab in zip(doc.input_ids, doc.labels, strict=True) if lab != IGNORE]
    )


def test_chatml_labels_only_assistant_content_and_end(asset):
    enc = Encoder(TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), template="chatml"))
    (rec,) = _conversation(
        ("human", "你好，介绍一下北京。"),
        ("assistant", "北京是中国的首都。"),
        ("human", "And Paris?"),
        ("assistant", "Paris is the capital."),
    )
    doc = enc.encode(rec)
    assert (
        _learned_text(enc.tok, doc) == "北京是中国的首都。<|im_end|>Paris is the capital.<|im_end|>"
    )
    text = enc.tok.decode(doc.input_ids)
    assert text.startswith("<|im_start|>user\n你好") and "<|im_start|>assistant\n" in text


def test_tokenizer_template_matches_apply_chat_template(asset):
    enc = Encoder(TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), template="tokenizer"))
    turns = (("human", "What is 2+2?"), ("assistant", "4"))
    (rec,) = _conversation(*turns)
    doc = enc.encode(rec)
    chat = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    assert doc.input_ids.tolist() == enc.tok.apply_chat_template(chat)
    assert _learned_text(enc.tok, doc).startswith("4<|im_end|>")


def test_llama2_template_on_the_llama2_tokenizer(asset):
    enc = Encoder(TokenizeConfig(tokenizer_dir=asset("llama2-tokenizer"), template="llama2"))
    (rec,) = _conversation(("system", "Be brief."), ("human", "Hi"), ("assistant", "Hello!"))
    doc = enc.encode(rec)
    assert doc.input_ids[0] == 1 and doc.input_ids[-1] == 2
    assert enc.tok.decode(doc.input_ids).startswith("<s> [INST] <<SYS>>\nBe brief.\n<</SYS>>")
    assert _learned_text(enc.tok, doc) == "Hello!</s>"


def test_template_tokens_must_exist(asset):
    enc = Encoder(TokenizeConfig(tokenizer_dir=asset("llama2-tokenizer"), template="chatml"))
    (rec,) = _conversation(("human", "Hi"), ("assistant", "Hello"))
    with pytest.raises(DataPackError, match="needs the token '<|im_start|>'"):
        enc.encode(rec)


def test_long_conversation_is_cut_at_a_turn_boundary(asset, tmp_path):
    long_answer = "很长的回答。" * 60
    rows = [
        {
            "messages": [
                {"from": "human", "content": "第一个问题"},
                {"from": "assistant", "content": "短回答。"},
                {"from": "human", "content": "第二个问题"},
                {"from": "assistant", "content": long_answer},
            ]
        },
        {
            "messages": [
                {"from": "human", "content": "问"},
                {"from": "assistant", "content": long_answer},
            ]
        },
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    tok = TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=64)
    m = pack(
        [Source(name="sft", inputs=[str(tmp_path / "c.jsonl")])],
        tok,
        PackConfig(out_dir=tmp_path / "o"),
    )
    assert (m.truncated_conversations, m.dropped_conversations, m.documents) == (1, 1, 1)
    data, _ = load_packed([tmp_path / "o"])
    text = load_tokenizer(asset("smollm2-135m")).decode(data[0]["input_ids"])
    assert text.endswith("短回答。<|im_end|>") and "第二个问题" not in text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "ok"', r"c\.jsonl:2: malformed JSON"),
        ('{"txt": "x"}', r"c\.jsonl:2: no known fields"),
        ('{"text": 5}', r"c\.jsonl:2: field 'text' must be a string, got int"),
        ('{"source": "a"}', r"c\.jsonl:2: missing field 'target'"),
        ('{"messages": [{"from": "bot", "content": "x"}]}', r"c\.jsonl:2: field 'messages\[0\]'"),
        ('{"messages": [{"from": "human", "content": "x"}]}', "no assistant turn"),
        ("[1, 2]", r"c\.jsonl:2: a record must be a JSON object"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataPackError, match=message):
        list(read_records([path]))
    stats = ReadStats()
    assert len(list(read_records([path], on_error=OnError.SKIP, stats=stats))) == 1
    assert stats.skipped == 1 and message.split(":")[-1].strip()[:8].replace("\\", "") in (
        stats.skipped_examples[0].replace("\\", "")
    )


def test_other_bad_inputs(tmp_path, asset):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataPackError, match="empty file"):
        list(read_records([tmp_path / "empty.jsonl"]))
    with pytest.raises(DataPackError, match="no such file, dir or matching glob"):
        list(read_records([tmp_path / "missing/*.jsonl"]))
    with pytest.raises(DataPackError, match="unknown template 'alpaca'; choose one of llama2"):
        TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), template="alpaca")
    with pytest.raises(DataPackError, match="max_length must be at least 2, got 1"):
        TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=1)
    (tmp_path / "gbk.jsonl").write_bytes(
        '{"text": "好"}\n'.encode() + '{"text": "坏"}'.encode("gbk")
    )
    with pytest.raises(DataPackError, match=r"gbk\.jsonl:2: not UTF-8"):
        list(read_records([tmp_path / "gbk.jsonl"]))


def test_parquet_and_json_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["一", "二"], "category": ["a", "b"]}), tmp_path / "t.parquet")
    (tmp_path / "t.json").write_text(json.dumps([{"text": "三"}]), encoding="utf-8")
    recs = list(read_records([tmp_path]))
    assert [(r.target, r.category) for r in recs] == [("三", "t"), ("一", "a"), ("二", "b")]


def test_sampler_resumes_with_exactly_the_remaining_rows():
    full = list(ResumableSampler(103, rank=1, world_size=2, shuffle=True, seed=3))
    first = ResumableSampler(103, rank=1, world_size=2, shuffle=True, seed=3)
    it = iter(first)
    head = [next(it) for _ in range(17)]
    state = first.state_dict()
    resumed = ResumableSampler(103, rank=1, world_size=2, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    assert head + list(resumed) == full and len(full) == 51
    other = list(ResumableSampler(103, rank=0, world_size=2, shuffle=True, seed=3))
    assert not set(other) & set(full)


def test_dirs_packed_apart_load_together(asset, corpora, tmp_path):
    tok = TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=512)
    a = pack(
        [Source(name="zh", inputs=[str(corpora["zh"])])],
        tok,
        PackConfig(out_dir=tmp_path / "a", num_bins=2),
    )
    b = pack(
        [Source(name="en", inputs=[str(corpora["en"])])],
        tok,
        PackConfig(out_dir=tmp_path / "b", num_bins=2),
    )
    data, manifests = load_packed([tmp_path / "a", tmp_path / "b"])
    assert len(data) == a.rows + b.rows and len(manifests) == 2
    assert data["bucket"] == sorted(data["bucket"])
    assert {"zh", "en"} == set(data.filter(lambda r: r["bucket"] == 0)["category"])
    other = TokenizeConfig(tokenizer_dir=asset("llama2-tokenizer"), max_length=512)
    pack(
        [Source(name="en", inputs=[str(corpora["en"])])], other, PackConfig(out_dir=tmp_path / "c")
    )
    with pytest.raises(DataPackError, match="another tokenizer or max_length"):
        load_packed([tmp_path / "a", tmp_path / "c"])


def test_existing_output_is_refused(asset, corpora, tmp_path):
    (tmp_path / "o").mkdir()
    tok = TokenizeConfig(tokenizer_dir=asset("smollm2-135m"), max_length=512)
    with pytest.raises(DataPackError, match="already exists"):
        pack(
            [Source(name="zh", inputs=[str(corpora["zh"])])],
            tok,
            PackConfig(out_dir=tmp_path / "o"),
        )


def test_plain_text_files_are_one_document_per_line(tmp_path):
    (tmp_path / "a.txt").write_text("第一篇\n\n第二篇\r\n", encoding="utf-8")
    recs = list(read_records([tmp_path / "a.txt"]))
    assert [(r.kind, r.target, r.category) for r in recs] == [
        ("text", "第一篇", "a"),
        ("text", "第二篇", "a"),
    ]


def test_llama3_template_on_the_llama3_tokenizer(asset):
    enc = Encoder(TokenizeConfig(tokenizer_dir=asset("llama3-tokenizer"), template="llama3"))
    (rec,) = _conversation(("system", "Be brief."), ("human", "你好"), ("assistant", "你好！"))
    doc = enc.encode(rec)
    text = enc.tok.decode(doc.input_ids)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert _learned_text(enc.tok, doc) == "你好！<|eot_id|>"


def test_bos_option_makes_the_first_token_of_a_document_a_target(asset, tmp_path):
    """SmolLM2's tokenizer adds no BOS, so by default a document's first token has no context
    to be predicted from; with ``add_bos`` it follows BOS (not learned) and is learned."""
    path = tmp_path / "zh.txt"
    path.write_text("人民日报 社论\n", encoding="utf-8")
    (rec,) = read_records([path])
    plain = Encoder(TokenizeConfig(tokenizer_dir=asset("smollm2-tokenizer"))).encode(rec)
    enc = Encoder(TokenizeConfig(tokenizer_dir=asset("smollm2-tokenizer"), add_bos=True))
    doc = enc.encode(rec)
    assert doc.input_ids[0] == enc.tok.bos_token_id and doc.labels[0] == IGNORE
    assert list(doc.input_ids[1:]) == list(plain.input_ids)
    assert list(doc.labels[1:]) == list(plain.labels) == list(plain.input_ids)


def test_bos_on_a_tokenizer_without_one_is_refused(asset, tmp_path):
    import shutil

    tok_dir = tmp_path / "no-bos"
    shutil.copytree(asset("smollm2-tokenizer"), tok_dir)
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["bos_token"] = None
    cfg_path.write_text(json.dumps(cfg))
    special = tok_dir / "special_tokens_map.json"
    if special.is_file():
        data = json.loads(special.read_text())
        data.pop("bos_token", None)
        special.write_text(json.dumps(data))
    with pytest.raises(DataPackError, match="no bos token"):
        Encoder(TokenizeConfig(tokenizer_dir=tok_dir, add_bos=True))
