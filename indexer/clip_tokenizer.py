"""CLIP's byte-level BPE tokenizer without torch: the same ids as open_clip's SimpleTokenizer.

open_clip's tokenizer module imports torch at the top, and importing torch costs a fresh
`pixseek search` process seconds; the ONNX query path tokenises here instead. The algorithm is
OpenAI CLIP's (MIT licence), as open_clip ships it; tests/test_onnx.py checks the ids against
open_clip's on many strings, non-ASCII ones included.
"""

from __future__ import annotations

import gzip
import html
import string
from functools import lru_cache
from pathlib import Path

import numpy as np

# The vocabulary file holds more merges than CLIP uses: its 49,408 ids are 256 bytes, their
# end-of-word forms, 48,894 merges and the two special tokens.
_MERGES = 49152 - 256 - 2
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@lru_cache
def _byte_to_unicode() -> dict[int, str]:
    """Printable stand-ins for every byte, so BPE never sees whitespace or control characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


class ClipTokenizer:
    """`tokenizer(texts)` -> int64 (N, context_length) ids, zero-padded, as open_clip returns them."""

    def __init__(self, vocab: Path, context_length: int, clean: str = "lower") -> None:
        import regex

        merges = gzip.open(vocab).read().decode("utf-8").split("\n")[1 : _MERGES + 1]
        pairs = [tuple(m.split()) for m in merges]
        symbols = list(_byte_to_unicode().values())
        words = symbols + [s + "</w>" for s in symbols] + ["".join(p) for p in pairs]
        words += ["<start_of_text>", "<end_of_text>"]
        self._ids = {w: i for i, w in enumerate(words)}
        self._ranks = {p: i for i, p in enumerate(pairs)}
        self._cache: dict[str, list[int]] = {}
        self.sot, self.eot = self._ids["<start_of_text>"], self._ids["<end_of_text>"]
        self.context_length = context_length
        self._clean = clean
        self._pattern = regex.compile(
            r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out

    def encode(self, text: str) -> list[int]:
        byte_map = _byte_to_unicode()
        ids: list[int] = []
        for piece in self._pattern.findall(self._cleaned(text)):
            word = "".join(byte_map[b] for b in piece.encode("utf-8"))
            ids.extend(self._word_ids(word))
        return ids

    def _cleaned(self, text: str) -> str:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        if self._clean == "canonicalize":
            text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        text = " ".join(text.split())
        return text.lower() if self._clean == "lower" else text

    def _word_ids(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is None:
            cached = [self._ids[s] for s in self._bpe(word)]
            self._cache[word] = cached
        return cached

    def _bpe(self, word: str) -> list[str]:
        if word in ("<start_of_text>", "<end_of_text>"):
            return [word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            # Merge the best-ranked adjacent pair everywhere it occurs, until no pair is known.
            best = min(zip(parts, parts[1:]), key=lambda pair: self._ranks.get(pair, _MERGES))
            if best not in self._ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts
