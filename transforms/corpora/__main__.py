"""`python -m emer_builder.transforms.corpora`: print the table of built-in corpus adapters (pasted into docs/guide/long-videos.md)."""

from emer_builder.transforms.corpora import corpus_table

print(corpus_table())
