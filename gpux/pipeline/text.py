"""Text -> token ids, attention mask and token type ids, with Hugging Face ``tokenizers``.

The tokenizer does the work in Rust for the whole batch at once; this module only configures
truncation and padding, checks lengths and turns the encodings into int64 arrays. A value may
also be :class:`TokenIds`, text already tokenised with the model's own tokenizer (the OpenAI
embeddings API takes those); no JSON value becomes one, so ``predict`` still takes text only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpux.config.pipeline import Padding, TextInput
from gpux.errors import ConfigValidationError, InputError, value_kind

_PAD_TOKENS = ("[PAD]", "<pad>", "<|padding|>", "<unk>")


class TokenIds(tuple[int, ...]):
    """Token ids of the model's own vocabulary, used as they are (no special tokens added)."""


def load_tokenizer(path: Path, what: str) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise ConfigValidationError(
            f"{what}: '{path.name}' is not a tokenizer.json the tokenizers library can read "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            "use the tokenizer.json saved with the model (tokenizer.save_pretrained writes it)",
        ) from None


class TextPreprocessor:
    """Tokenises a batch of texts (or text pairs) into the model's int64 inputs."""

    def __init__(
        self,
        spec: TextInput,
        tokenizer_path: Path,
        model_inputs: Collection[str],
        name: str = "text",
    ) -> None:
        self.spec = spec
        self.name = name
        self._tokenizer = load_tokenizer(tokenizer_path, f"input '{name}'")
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        # Lengths are checked before truncation, so a too-long text without truncation is an
        # error instead of a silently cut one; with truncation, the tokenizer cuts in Rust.
        if spec.truncation:
            self._tokenizer.enable_truncation(spec.max_length)
        pad_id, pad_token = self._pad()
        self._tokenizer.enable_padding(
            pad_id=pad_id,
            pad_token=pad_token,
            length=spec.max_length if spec.padding == Padding.max_length else None,
        )
        fast = getattr(self._tokenizer, "encode_batch_fast", None)  # no offsets: faster
        self._encode = fast or self._tokenizer.encode_batch
        wanted = {"ids": spec.ids, "attention_mask": spec.mask, "type_ids": spec.type_ids}
        self.targets = {k: v for k, v in wanted.items() if v is not None and v in model_inputs}

    def _pad(self) -> tuple[int, str]:
        configured = self._tokenizer.padding
        if configured:
            return int(configured["pad_id"]), str(configured["pad_token"])
        for token in _PAD_TOKENS:
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return int(token_id), token
        return 0, "[PAD]"

    def count_tokens(self, values: Sequence[Any]) -> list[int]:
        """Tokens each value becomes (after truncation), as the model will read them."""
        counts = []
        for position, value in enumerate(values):
            if isinstance(value, TokenIds):
                counts.append(len(self._checked_ids(value, _where(position, len(values)))))
            else:
                encoding = self._tokenizer.encode(self._checked(value, ""), add_special_tokens=True)
                counts.append(sum(encoding.attention_mask))
        return counts

    def __call__(self, values: Sequence[Any]) -> dict[str, np.ndarray[Any, Any]]:
        if any(isinstance(value, TokenIds) for value in values):
            return self._from_ids(values)
        texts = [self._checked(value, _where(i, len(values))) for i, value in enumerate(values)]
        encodings = self._encode(texts, add_special_tokens=True)
        if not self.spec.truncation:
            for position, encoding in enumerate(encodings):
                length = sum(encoding.attention_mask)
                if length > self.spec.max_length:
                    raise InputError(
                        f"input '{self.name}'{_where(position, len(values))} has {length} tokens, "
                        f"more than max_length {self.spec.max_length}",
                        "shorten the text, or set truncation: true under preprocess[].text",
                    )
        tensors: dict[str, np.ndarray[Any, Any]] = {}
        for field, target in self.targets.items():
            rows = [getattr(encoding, field) for encoding in encodings]
            tensors[target] = np.array(rows, dtype=np.int64)
        return tensors

    def _from_ids(self, values: Sequence[Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Rows of given token ids (texts among them tokenised one by one), padded together."""
        rows: list[list[int]] = []
        for position, value in enumerate(values):
            where = _where(position, len(values))
            if isinstance(value, TokenIds):
                rows.append(self._checked_ids(value, where))
            else:
                encoding = self._tokenizer.encode(
                    self._checked(value, where), add_special_tokens=True
                )
                rows.append(list(encoding.ids[: sum(encoding.attention_mask)]))
        width = max(len(row) for row in rows)
        if self.spec.padding == Padding.max_length:
            width = max(width, self.spec.max_length)
        pad_id, _ = self._pad()
        columns = {
            "ids": [row + [pad_id] * (width - len(row)) for row in rows],
            "attention_mask": [[1] * len(row) + [0] * (width - len(row)) for row in rows],
            "type_ids": [[0] * width for _ in rows],
        }
        return {
            target: np.array(columns[field], dtype=np.int64)
            for field, target in self.targets.items()
        }

    def _checked_ids(self, ids: TokenIds, where: str) -> list[int]:
        size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        bad = next((i for i in ids if not 0 <= i < size), None)
        if bad is not None:
            raise InputError(
                f"input '{self.name}'{where}: token id {bad} is not in the model's vocabulary "
                f"(0 to {size - 1})",
                "send token ids of this model's own tokenizer, or send the text",
            )
        if not ids:
            raise InputError(f"input '{self.name}'{where} has no token ids", "send at least one")
        if len(ids) > self.spec.max_length:
            if not self.spec.truncation:
                raise InputError(
                    f"input '{self.name}'{where} has {len(ids)} tokens, more than max_length "
                    f"{self.spec.max_length}",
                    "send fewer tokens, or set truncation: true under preprocess[].text",
                )
            return list(ids[: self.spec.max_length])
        return list(ids)

    def _checked(self, value: Any, where: str) -> Any:
        if self.spec.pairs:
            if (
                isinstance(value, list | tuple)
                and len(value) == 2
                and all(isinstance(v, str) for v in value)
            ):
                return (value[0], value[1])
            raise InputError(
                f"input '{self.name}'{where} must be a pair of texts, got {value_kind(value)}",
                'send ["first text", "second text"]',
            )
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(
                    f"input '{self.name}'{where} is not UTF-8 text", "send UTF-8 encoded text"
                ) from None
        if not isinstance(value, str):
            raise InputError(
                f"input '{self.name}'{where} must be text, got {value_kind(value)}",
                'send a string, e.g. "I love this product"',
            )
        return value


def _where(position: int, count: int) -> str:
    return "" if count == 1 else f" (item {position + 1})"
