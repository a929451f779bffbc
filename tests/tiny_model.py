"""A tiny BERT and WordPiece tokenizer built on the spot, so training tests run in seconds
without any downloaded weights. Real training code runs on it; nothing is faked."""

from __future__ import annotations

import csv
import random
from pathlib import Path

COMPANIES = ["acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark", "wayne"]
BEARISH = [
    "plunge after profit warning",
    "slump as regulator opens probe",
    "cut to sell at broker",
    "miss estimates and cut guidance",
]
BULLISH = [
    "surge on record revenue",
    "rally after upgrade to buy",
    "beat estimates and raise dividend",
    "jump on buyback plan",
]
NEUTRAL = [
    "schedule annual meeting",
    "name new board member",
    "to report results on tuesday",
    "file quarterly statement",
]
TOPICS = {
    "Earnings": ["quarterly results beat estimates", "profit falls in third quarter", "earnings call scheduled"],
    "Dividend": ["raises dividend", "declares special dividend", "suspends dividend"],
    "Analyst Update": ["upgraded to buy at broker", "downgraded to sell", "price target raised"],
}


def synthetic_rows(seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rng = random.Random(seed)
    sentiment, topic = [], []
    for company in COMPANIES:
        for label, phrases in (("bearish", BEARISH), ("bullish", BULLISH), ("neutral", NEUTRAL)):
            for phrase in phrases:
                sentiment.append((f"${company.upper()} {company.title()} shares {phrase} {rng.randint(1, 99)}", label))
        for label, phrases in TOPICS.items():
            for phrase in phrases:
                topic.append((f"{company.title()} {phrase} https://t.co/{rng.randint(1000, 9999)}", label))
    return sentiment, topic


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def build_tiny_base(folder: Path, corpus: list[str]) -> Path:
    from tokenizers import (
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", tokenizer.token_to_id("[SEP]")), ("[CLS]", tokenizer.token_to_id("[CLS]"))
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder
