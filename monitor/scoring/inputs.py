"""Model input from (text, retrieved items): the one function serving and training both call.

If serving and training built inputs differently the model would silently degrade, so everything
that shapes what the encoder sees (cleaning, context selection, token budget, segment ids) lives
here and nowhere else.

Two ways of using retrieved context are supported, chosen by the model's manifest:

* ``concat``: the item's text, then ``[SEP]``-separated neighbour texts, truncated to a token budget.
  The item's text is never truncated before the context is. Costs encoder time per neighbour token.
* ``fusion``: the encoder sees the item's text alone; the neighbours' stored representations
  (computed once, when they were scored) and labels are fused in the head. Costs almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monitor.model_artifact import ContextSettings
from monitor.retrieval.vectors import Neighbour
from monitor.text import clean_text


@dataclass(frozen=True)
class ModelInput:
    text: str
    context: tuple[str, ...] = ()  # neighbour texts the encoder sees (concat)
    neighbours: tuple[Neighbour, ...] = field(default=())  # what the head fuses (fusion)


def build_model_input(text: str, retrieved: Sequence[Neighbour], settings: ContextSettings) -> ModelInput:
    """Build what the model sees for one item.

    >>> build_model_input("Acme &amp; Co slump", [], ContextSettings()).text
    'Acme & Co slump'
    """
    neighbours = tuple(retrieved[: settings.k])
    if settings.mode == "concat":
        return ModelInput(clean_text(text), context=tuple(clean_text(n.text) for n in neighbours))
    if settings.mode == "fusion":
        return ModelInput(clean_text(text), neighbours=neighbours)
    return ModelInput(clean_text(text))


@dataclass(frozen=True)
class EncodedBatch:
    input_ids: np.ndarray  # int64 [batch, length], padded to the longest in the batch
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


def encode(tokenizer, inputs: Sequence[ModelInput], settings: ContextSettings) -> EncodedBatch:
    """Token ids for a batch: [CLS] text [SEP] (context [SEP])…, dynamically padded.

    `tokenizer` is a `tokenizers.Tokenizer` (the fast WordPiece tokenizer of the model directory).
    The text takes what it needs of ``max_length``; context fills what is left, at most
    ``context_budget`` tokens, neighbour by neighbour, the last one cut to fit.
    """
    cls_id, sep_id, pad_id = special_ids(tokenizer)
    texts = tokenizer.encode_batch([i.text for i in inputs], add_special_tokens=False)
    contexts = [tokenizer.encode_batch(list(i.context), add_special_tokens=False) if i.context else [] for i in inputs]
    rows: list[tuple[list[int], list[int]]] = []
    for text, context in zip(texts, contexts):
        ids = [cls_id, *text.ids[: settings.max_length - 2], sep_id]
        types = [0] * len(ids)
        room = min(settings.context_budget, settings.max_length - len(ids))
        for piece in context:
            if room <= 1:
                break
            take = piece.ids[: room - 1]
            ids += [*take, sep_id]
            types += [1] * (len(take) + 1)
            room -= len(take) + 1
        rows.append((ids, types))
    length = max(len(ids) for ids, _ in rows)
    input_ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    token_types = np.zeros((len(rows), length), dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for r, (ids, types) in enumerate(rows):
        input_ids[r, : len(ids)] = ids
        token_types[r, : len(types)] = types
        mask[r, : len(ids)] = 1
    return EncodedBatch(input_ids, mask, token_types)


def special_ids(tokenizer) -> tuple[int, int, int]:
    """The start, separator and padding ids of a tokenizer: [CLS]/[SEP]/[PAD] of a BERT vocabulary,
    <s>/</s>/<pad> of an MPNet or RoBERTa one. Its own template says which (an empty text encodes to
    its start and end tokens); an MPNet vocabulary holds a "[CLS]" too, as an ordinary token."""
    frame = tokenizer.encode("", add_special_tokens=True).ids
    pad = tokenizer.token_to_id("[PAD]" if tokenizer.id_to_token(frame[0]) == "[CLS]" else "<pad>") if frame else None
    if len(frame) != 2 or pad is None:
        raise ValueError("the tokenizer has no [CLS] … [SEP] (or <s> … </s>) template with a padding token")
    return frame[0], frame[1], pad


def load_tokenizer(path: str | Path):
    """The fast tokenizer of a model directory, with its own padding/truncation switched off:
    :func:`encode` decides both, identically in training and serving."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
