"""Reading piece lists: every input line accounted for, bad lines named by file and line."""

from __future__ import annotations

import pytest

from llamaforge_tokenizer import TokenizerExpandError, read_pieces


def test_jsonl_counts_duplicates_and_blank_lines(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "你好"}\n\n{"piece": "世界"}\n{"piece": "你好"}\n', encoding="utf-8")
    got = read_pieces(f)
    assert got.pieces == ["你好", "世界"]
    assert (got.duplicates, got.blank_lines) == (1, 1)


def test_plain_text_list(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("你好\n世界\n\n你好\n", encoding="utf-8")
    got = read_pieces(f)
    assert got.pieces == ["你好", "世界"] and got.duplicates == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"piece": ""}', "empty"),
        ('{"piece": "   "}', "only whitespace"),
        ('{"piece": "a\\u0007b"}', r"U\+0007"),
        ('{"piece": "' + "长" * 17 + '"}', "more than the limit of 16"),
        ('{"piece": 3}', "must be a string"),
        ('{"word": "x"}', "missing field 'piece'"),
        ('{"piece": "x"', "malformed JSON"),
    ],
)
def test_invalid_lines_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "p.jsonl"
    f.write_text('{"piece": "好"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(TokenizerExpandError, match=rf"p\.jsonl:2: .*{message}"):
        read_pieces(f)


def test_non_utf8_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes("好\n".encode() + "坏".encode("gbk") + b"\n")
    with pytest.raises(TokenizerExpandError, match=r"p\.txt:2: not UTF-8"):
        read_pieces(f)
