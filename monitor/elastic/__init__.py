"""The Elasticsearch adapters, one module per store, all through client.py (connect, indices,
error translation): history (the news index, dedup and related history), outbox (alerts), labels,
snapshots (the detection stage's state). The embedded default's counterparts live beside their ports."""
