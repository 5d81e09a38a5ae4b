"""What the report concludes: the comparison of the arms, noise, and the targets — pure
functions over the eval results, so each rule is tested on its own."""

from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_BPC_GAIN = 0.10  # target-language bits per character at least 10 % below the base model
KEEP_BPC_TOLERANCE = 0.05  # other languages' bits per character within +5 % of the base model
COMPRESSION_TARGET = 0.40  # target-language tokens per character down at least 40 %
SPEED_TARGET = 2.0  # target-language characters generated per second, × the base model
Z95 = 1.96  # standard errors either side of an estimate that hold 95 % of its noise


@dataclass(frozen=True)
class Check:
    target: str
    met: bool
    value: str


def accuracy_stderr(accuracy: float, n: int) -> float:
    """Standard error of an accuracy over ``n`` questions, as lm-eval prints it:
    sqrt(p (1 − p) / (n − 1))."""
    if n < 2:
        return float("nan")
    return math.sqrt(accuracy * (1 - accuracy) / (n - 1))


def within_noise(a: float, se_a: float, b: float, se_b: float, z: float = Z95) -> bool:
    """Whether two independent estimates differ by less than ``z`` standard errors of their
    difference (95 % by default); an unknown error counts as noise."""
    se = math.sqrt(se_a**2 + se_b**2)
    return not math.isfinite(se) or abs(a - b) <= z * se


def bpc(results: dict, label: str) -> float | None:
    row = results.get("text", {}).get(label)
    return row["bits_per_char"] if row else None


@dataclass(frozen=True)
class Paired:
    """Bits per character of one model minus another's on the same documents."""

    difference: float
    stderr: float
    """Standard error of ``difference``, documents as the unit of sampling."""
    documents: int

    def within_noise(self) -> bool:
        """Whether the difference is within its 95 % interval of zero."""
        return not math.isfinite(self.stderr) or abs(self.difference) <= Z95 * self.stderr

    def describe(self) -> str:
        margin = Z95 * self.stderr
        return f"{self.difference:+.3f} ± {margin:.3f} (95 %, {self.documents} documents)"


def paired_bpc(a: dict, b: dict, label: str) -> Paired | None:
    """``a``'s bits per character on ``label`` minus ``b``'s, with a paired standard error.

    Both models scored the same documents, so the per-document differences carry the noise:
    the difference is a ratio of sums, Σ(bits_a − bits_b) / Σ chars, and its standard error
    the linearised (delta-method) one over documents. None when either result lacks the
    per-document values or they were not scored on the same documents."""
    ra, rb = a.get("text", {}).get(label, {}), b.get("text", {}).get(label, {})
    chars = ra.get("doc_chars")
    if (
        not chars
        or chars != rb.get("doc_chars")
        or not ra.get("doc_bits")
        or not rb.get("doc_bits")
    ):
        return None
    d = [x - y for x, y in zip(ra["doc_bits"], rb["doc_bits"], strict=True)]
    n, total = len(d), sum(chars)
    diff = sum(d) / total
    if n < 2:
        return Paired(diff, float("nan"), n)
    spread = sum((di - diff * ci) ** 2 for di, ci in zip(d, chars, strict=True))
    return Paired(diff, math.sqrt(n / (n - 1) * spread) / total, n)


def arm_verdict(
    label: str, control: float, expanded: float, flops: float | None, paired: Paired | None = None
) -> str:
    """One line: which arm models ``label`` text better at equal training compute — a tie
    when the paired difference is within noise."""
    compute = f" at equal training compute ({flops:.3g} FLOPs each)" if flops else ""
    noise = f"; expanded − control {paired.describe()}" if paired else ""
    if paired and paired.within_noise() and expanded != control:
        return (
            f"The arms tie on {label}{compute}: {expanded:.3f} bits per character for the "
            f"expanded model, {control:.3f} for the control — within noise{noise}."
        )
    if expanded < control:
        gain = 1 - expanded / control
        return (
            f"The expanded model wins on {label}{compute}: {expanded:.3f} bits per character "
            f"against the control's {control:.3f} ({gain:.1%} fewer{noise})."
        )
    if expanded > control:
        loss = expanded / control - 1
        return (
            f"The control wins on {label}{compute}: {control:.3f} bits per character against "
            f"the expanded model's {expanded:.3f} (the expansion costs {loss:.1%}{noise})."
        )
    return f"The arms tie on {label}{compute}: {expanded:.3f} bits per character each."


def checks(
    *,
    target: str,
    keep: list[str],
    base: dict,
    result: dict,
    control: dict | None,
    chat_expect: str | None = None,
    chat_question: str | None = None,
) -> list[Check]:
    """The method's targets, each met or missed with the measured value."""
    out: list[Check] = []
    b, r = bpc(base, target), bpc(result, target)
    c = bpc(control, target) if control else None
    if c is not None and r is not None:
        paired = paired_bpc(result, control, target)
        value = f"{r:.3f} vs {c:.3f}"
        if paired:
            value += f", {paired.describe()}" + (", within noise" if paired.within_noise() else "")
        below = r < c and not (paired and paired.within_noise())
        out.append(Check(f"{target}: bits per character below the control's", below, value))
    if b is not None and r is not None:
        gain = 1 - r / b
        out.append(
            Check(
                f"{target}: bits per character ≥ {TARGET_BPC_GAIN:.0%} below the base model's",
                gain >= TARGET_BPC_GAIN,
                f"{b:.3f} → {r:.3f}, {gain:.1%} lower",
            )
        )
    for label in keep:
        kb, kr = bpc(base, label), bpc(result, label)
        if kb is not None and kr is not None:
            change = kr / kb - 1
            out.append(
                Check(
                    f"{label}: bits per character within +{KEEP_BPC_TOLERANCE:.0%} of the base "
                    "model's",
                    change <= KEEP_BPC_TOLERANCE,
                    f"{kb:.3f} → {kr:.3f}, {change:+.1%}",
                )
            )
    tb = base.get("text", {}).get(target, {}).get("tokens_per_char")
    tr = result.get("text", {}).get(target, {}).get("tokens_per_char")
    if tb and tr:
        fewer = 1 - tr / tb
        out.append(
            Check(
                f"{target}: tokens per character ≥ {COMPRESSION_TARGET:.0%} fewer",
                fewer >= COMPRESSION_TARGET,
                f"{tb:.3f} → {tr:.3f}, {fewer:.1%} fewer",
            )
        )
    sb = base.get("generation", {}).get("chars_per_s")
    sr = result.get("generation", {}).get("chars_per_s")
    if sb and sr:
        out.append(
            Check(
                f"{target}: characters generated per second ≥ {SPEED_TARGET:.0f}× the base model's",
                sr / sb >= SPEED_TARGET,
                f"{sb:.1f} → {sr:.1f}, {sr / sb:.2f}×",
            )
        )
    if chat_expect and chat_question:
        answer = result.get("chat", {}).get(chat_question, "")
        out.append(
            Check(
                f"the result's answer to {chat_question!r} still says {chat_expect!r}",
                chat_expect.lower() in answer.lower(),
                repr(answer[:80]),
            )
        )
    return out
