"""Learn new vocabulary pieces from domain text: continue BPE training on top of a tokenizer.

Starting from the current tokenizer's segmentation of the corpus, two kinds of step are ranked
together by the exact number of tokens they save on the corpus:

* *add a character* that the tokenizer can only spell with byte fallback (saves cost − 1 tokens
  per occurrence), and
* *merge two adjacent vocabulary pieces* into one (saves one token per occurrence).

The best step is taken, the counts are updated incrementally, and the next best is chosen — the
greedy procedure of BPE training, so each learned piece can be built from earlier ones by a merge
and the list's order is a valid merge priority. An optional word list (e.g. jieba's dictionary)
restricts multi-character pieces to substrings of its words, so pieces follow word boundaries.
No piece joins a digit to anything else (numbers keep the base tokenizer's one digit per token),
but a lone digit spelled with several byte tokens, such as the full-width ``１``, may be added.
"""

from __future__ import annotations

import heapq
import logging
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.pieces import read_utf8
from llamaforge_tokenizer.segment import Chunk, load_segmenter

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class LearnConfig:
    """Settings of :func:`learn_pieces`."""

    num_pieces: int = 8000
    """How many pieces to propose (fewer if candidates run out)."""
    max_piece_chars: int = 8
    """Longest piece, in characters."""
    min_saving: int = 2
    """Stop once the best candidate saves fewer tokens than this on the corpus."""
    word_list: Path | None = None
    """Optional word list, one ``word [freq [pos]]`` per line (jieba's ``dict.txt`` format)."""
    min_word_freq: int = 1
    """Ignore word-list entries rarer than this."""
    max_corpus_chars: int | None = None
    """Read at most this many characters of corpus (None: all)."""

    def __post_init__(self) -> None:
        problems = []
        if self.num_pieces < 1:
            problems.append(f"num_pieces must be ≥ 1, got {self.num_pieces}")
        if self.max_piece_chars < 2:
            problems.append(f"max_piece_chars must be ≥ 2, got {self.max_piece_chars}")
        if self.min_saving < 1:
            problems.append(f"min_saving must be ≥ 1, got {self.min_saving}")
        if problems:
            raise TokenizerExpandError("; ".join(problems))


@dataclass(frozen=True)
class Candidate:
    """One proposed piece and the tokens it saves on the corpus when added in list order."""

    piece: str
    saving: int
    count: int
    kind: str  # "char" or "merge"

    def to_dict(self) -> dict:
        return {"piece": self.piece, "saving": self.saving, "count": self.count, "kind": self.kind}


@dataclass(kw_only=True)
class LearnResult:
    """What :func:`learn_pieces` found: the pieces in order, and the corpus's token counts."""

    candidates: list[Candidate]
    tokens_before: int
    tokens_after: int
    characters: int
    asked: int
    """``num_pieces`` of the config."""
    min_saving: int
    """``min_saving`` of the config: the learner stops below it."""

    def summary(self) -> str:
        """One line: how many pieces were learned, and why fewer than asked where that is so."""
        line = f"learned {len(self.candidates):,} pieces"
        if len(self.candidates) < self.asked:
            further = "further " if self.candidates else ""
            line += (
                f" ({self.asked:,} asked: no {further}piece saves ≥ {self.min_saving} tokens"
                " on this corpus)"
            )
        return line


def read_corpus(files: Iterable[Path], max_chars: int | None = None) -> list[str]:
    """Lines of the corpus files (UTF-8), stopping after ``max_chars`` characters."""
    lines, total = [], 0
    for path in files:
        for line in read_utf8(Path(path)).splitlines():
            if not line.strip():
                continue
            if max_chars is not None and total + len(line) > max_chars:
                return lines
            lines.append(line)
            total += len(line)
    return lines


def read_word_substrings(path: Path, min_freq: int, max_chars: int) -> set[str]:
    """All substrings (≥ 2 chars, ≤ ``max_chars``) of the words in a word list."""
    subs: set[str] = set()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        raise TokenizerExpandError(f"{path}: cannot read word list ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 1:
            try:
                freq = int(fields[1])
            except ValueError:
                raise TokenizerExpandError(
                    f"{path}:{lineno}: frequency {fields[1]!r} is not an integer"
                ) from None
            if freq < min_freq:
                continue
        word = fields[0]
        n = len(word)
        if n > 1:
            subs.update(
                [word[i:j] for i in range(n - 1) for j in range(i + 2, min(n, i + max_chars) + 1)]
            )
    return subs


def learn_pieces(
    tokenizer_dir: Path,
    corpus_files: list[Path],
    config: LearnConfig,
    progress: Callable[[int], None] | None = None,
) -> LearnResult:
    """Propose ``config.num_pieces`` new pieces for the tokenizer in ``tokenizer_dir``.

    Args:
        tokenizer_dir: the current tokenizer (sentencepiece dir or byte-level BPE dir).
        corpus_files: domain text, UTF-8, one document per line.
        config: see :class:`LearnConfig`.
        progress: called with the number of pieces learned so far.
    """
    seg = load_segmenter(tokenizer_dir)
    lines = read_corpus(corpus_files, config.max_corpus_chars)
    if not lines:
        raise TokenizerExpandError("the corpus is empty")
    words = (
        read_word_substrings(config.word_list, config.min_word_freq, config.max_piece_chars)
        if config.word_list
        else None
    )

    def allowed(unit: str) -> str | None:
        text = seg.text(unit)
        if text is None or len(text.strip()) > config.max_piece_chars:
            return None
        core = text[1:] if text.startswith(" ") else text
        if not core or any(ch.isspace() for ch in core):
            return None
        if len(core) > 1 and any(unicodedata.category(ch) == "Nd" for ch in core):
            return None  # numbers stay one digit per token; a lone digit may become one token
        if words is not None and len(core) > 1 and core not in words:
            return None
        return text

    engine = _Engine(seg.chunks(lines), seg.vocab, allowed)
    before = engine.total_tokens()
    result = engine.run(config.num_pieces, config.min_saving, progress)
    return LearnResult(
        candidates=result,
        tokens_before=before,
        tokens_after=engine.total_tokens(),
        characters=sum(len(line) for line in lines),
        asked=config.num_pieces,
        min_saving=config.min_saving,
    )


class _Engine:
    """Incremental greedy BPE over weighted chunks (linked lists + lazy max-heap)."""

    def __init__(
        self, chunks: Counter[Chunk], vocab: frozenset[str], allowed: Callable[[str], str | None]
    ):
        self.allowed = allowed
        self.ids: dict[str, int] = {}
        self.strs: list[str] = []
        self.is_piece: list[bool] = []
        self.cost: list[int] = []
        self.vocab = vocab
        sym: list[int] = []
        nxt: list[int] = []
        prv: list[int] = []
        weight: list[int] = []
        pair_pos: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        pair_cnt: Counter[tuple[int, int]] = Counter()
        sym_cnt: Counter[int] = Counter()
        intern = self._intern
        for (units, costs), w in chunks.items():
            ids = [intern(unit, c) for unit, c in zip(units, costs, strict=True)]
            start, n = len(sym), len(ids)
            if not n:
                continue
            sym.extend(ids)
            prv.extend(range(start - 1, start + n - 1))
            prv[start] = -1
            nxt.extend(range(start + 1, start + n + 1))
            nxt[-1] = -1
            weight.extend([w] * n)
            for s in ids:
                sym_cnt[s] += w
            for k in range(n - 1):
                pair = (ids[k], ids[k + 1])
                pair_pos[pair].add(start + k)
                pair_cnt[pair] += w
        self.sym, self.nxt, self.prv, self.weight = sym, nxt, prv, weight
        self.pair_pos = pair_pos
        self.pair_cnt = pair_cnt
        self.sym_cnt = sym_cnt
        self.pairs_of: defaultdict[int, set[tuple[int, int]]] = defaultdict(set)
        for pair in pair_cnt:
            self.pairs_of[pair[0]].add(pair)
            self.pairs_of[pair[1]].add(pair)
        self.heap: list[tuple[int, int, str, object]] = []
        self._tick = 0
        for pair in self.pair_cnt:
            self._push_pair(pair)
        for s, n in self.sym_cnt.items():
            if not self.is_piece[s] and self.cost[s] > 1 and self.allowed(self.strs[s]):
                self._push(("char", s), (self.cost[s] - 1) * n)

    def _intern(self, unit: str, cost: int = 1) -> int:
        sid = self.ids.get(unit)
        if sid is None:
            sid = self.ids[unit] = len(self.strs)
            self.strs.append(unit)
            piece = unit in self.vocab
            self.is_piece.append(piece)
            self.cost.append(1 if piece else max(cost, 1))
        return sid

    def total_tokens(self) -> int:
        return sum(self.cost[s] * n for s, n in self.sym_cnt.items())

    def _push(self, key, saving):
        self._tick += 1
        heapq.heappush(self.heap, (-saving, self._tick, key[0], key[1]))

    def _mergeable(self, pair) -> bool:
        a, b = pair
        return self.is_piece[a] and self.is_piece[b]

    def _push_pair(self, pair):
        if self.pair_cnt[pair] > 0 and self._mergeable(pair):
            self._push(("merge", pair), self.pair_cnt[pair])

    def _saving(self, kind, key) -> int:
        if kind == "char":
            return 0 if self.is_piece[key] else (self.cost[key] - 1) * self.sym_cnt[key]
        return self.pair_cnt[key] if self._mergeable(key) else 0

    def run(self, limit: int, min_saving: int, progress) -> list[Candidate]:
        out: list[Candidate] = []
        rejected: set[tuple[int, int]] = set()
        while self.heap and len(out) < limit:
            neg, _, kind, key = heapq.heappop(self.heap)
            current = self._saving(kind, key)
            if current != -neg:
                if current >= min_saving:
                    self._push((kind, key), current)
                continue
            if current < min_saving:
                break
            if kind == "char":
                self.is_piece[key] = True
                self.cost[key] = 1
                for pair in self.pairs_of[key]:
                    self._push_pair(pair)
                out.append(
                    Candidate(
                        self.allowed(self.strs[key]) or "", current, self.sym_cnt[key], "char"
                    )
                )
            else:
                if key in rejected:
                    continue
                text = self.allowed(self.strs[key[0]] + self.strs[key[1]])
                if text is None:
                    rejected.add(key)
                    continue
                count = self.pair_cnt[key]
                saved = self._merge(key)
                out.append(Candidate(text, saved, count, "merge"))
            if progress:
                progress(len(out))
        return out

    def _merge(self, pair) -> int:
        a, b = pair
        m = self._intern(self.strs[a] + self.strs[b])
        self.is_piece[m] = True
        self.cost[m] = 1
        sym, nxt, prv, weight = self.sym, self.nxt, self.prv, self.weight
        pair_pos, pair_cnt, pairs_of = self.pair_pos, self.pair_cnt, self.pairs_of
        touched: set[tuple[int, int]] = set()
        saved = 0
        for pos in sorted(pair_pos[pair]):
            q = nxt[pos]
            if sym[pos] != a or q == -1 or sym[q] != b:
                continue  # consumed by an overlapping occurrence (e.g. "aaa")
            w = weight[pos]
            p, r = prv[pos], nxt[q]
            # The pairs this occurrence took part in lose it ...
            if p != -1:
                left = (sym[p], a)
                pair_pos[left].discard(p)
                pair_cnt[left] -= w
            pair_cnt[pair] -= w
            if r != -1:
                right = (b, sym[r])
                pair_pos[right].discard(q)
                pair_cnt[right] -= w
            sym[pos] = m
            sym[q] = -1
            nxt[pos] = r
            if r != -1:
                prv[r] = pos
            # ... and the merged piece's new neighbours gain it.
            if p != -1:
                left = (sym[p], m)
                pair_pos[left].add(p)
                pair_cnt[left] += w
                touched.add(left)
            if r != -1:
                right = (m, sym[r])
                pair_pos[right].add(pos)
                pair_cnt[right] += w
                touched.add(right)
            saved += w
        self.sym_cnt[a] -= saved
        self.sym_cnt[b] -= saved
        self.sym_cnt[m] += saved
        pair_pos.pop(pair, None)
        for t in touched:
            pairs_of[t[0]].add(t)
            pairs_of[t[1]].add(t)
            self._push_pair(t)
        return saved
