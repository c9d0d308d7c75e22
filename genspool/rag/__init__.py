"""Retrieval-augmented generation: the libraries behind genspool's vector stores (issue 11).

Sources are read and reduced to text, cut into chunks by the embedding model's own tokenizer,
embedded through the queue, and kept as vector stores wire-compatible with OpenAI's; searches
are exact over an in-memory matrix (an ANN index only as a rebuildable cache) with OpenAI's
attribute filters applied before ranking. The modules here are self-contained libraries: they
import :mod:`genspool.core` and :mod:`genspool.exceptions`, never the API or the backends.
"""
