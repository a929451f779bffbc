"""One encoder, two heads (topic, sentiment), and the masked multi-task loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

IGNORE = -100  # target of an example that has no label for a head


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")


class MultiTaskEncoder(nn.Module):
    """A pretrained encoder, mean-pooled, with a topic head and a sentiment head.

    Besides the logits it returns the L2-normalised pooled vector: the item's representation,
    stored with it and used for dense retrieval and for fusion of retrieved context.
    """

    def __init__(self, encoder: nn.Module, n_topic: int, n_sentiment: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        config: Any = encoder.config  # a transformers model's PretrainedConfig
        hidden = int(config.hidden_size)
        # Segment (token type) embeddings are declared by BERT-style configs only.
        self.segments = int(config.to_dict().get("type_vocab_size") or 0) > 0
        self.dropout = nn.Dropout(dropout)
        self.topic_head = nn.Linear(hidden, n_topic)
        self.sentiment_head = nn.Linear(hidden, n_sentiment)

    @classmethod
    def from_base(
        cls, base_dir: str, n_topic: int, n_sentiment: int, lora: LoraSettings | None = None
    ) -> MultiTaskEncoder:
        from transformers import AutoModel

        # Eager attention exports to an ONNX graph that ONNX Runtime can fuse and quantise.
        encoder = AutoModel.from_pretrained(base_dir, attn_implementation="eager")
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
            )
            encoder = get_peft_model(encoder, config)
        return cls(encoder, n_topic, n_sentiment)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        # MPNet and RoBERTa-style encoders have no segment embeddings: only BERT-style ones take them.
        segments = {"token_type_ids": token_type_ids} if self.segments else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **segments).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        features = self.dropout(pooled)
        return self.topic_head(features), self.sentiment_head(features), F.normalize(pooled, dim=-1)


def masked_multitask_loss(
    topic_logits: torch.Tensor,
    sentiment_logits: torch.Tensor,
    topic_target: torch.Tensor,
    sentiment_target: torch.Tensor,
    weights: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """Sum of per-head cross-entropies; an example without a head's label adds nothing to it.

    Each head's loss is the mean over the examples that carry its label; a head with no labelled
    example in the batch contributes exactly zero (not NaN).
    """
    total = topic_logits.new_zeros(())
    for logits, target, weight in (
        (topic_logits, topic_target, weights[0]),
        (sentiment_logits, sentiment_target, weights[1]),
    ):
        if (target != IGNORE).any():
            total = total + weight * F.cross_entropy(logits, target, ignore_index=IGNORE)
    return total
