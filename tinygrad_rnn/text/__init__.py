"""Text for language models: characters (vocabulary, corpora, truncated-BPTT batches) in
`chars`, words (tokens, a vocabulary with <PAD> and <UNK>, sliding windows) in `words`.

Everything here is host-side NumPy and imports nothing else of the package, so `lm`
(the models, their training and sampling) builds on it and nothing below `lm` knows
about text.
"""
from .chars import (DEFAULT_MAX_CHARS, BPTTStream, CharVocab, Corpus, DataError,  # noqa: F401
                    UnknownCharError, batchify, corpus_text, load_corpus, read_text_dir,
                    read_text_file, split_train_val, stdlib_dir, stdlib_text, validation_text)
from .words import PAD, UNK, WordVocab, nearest_words, sliding_windows, tokenize  # noqa: F401

__all__ = ["DataError", "UnknownCharError", "CharVocab", "Corpus", "read_text_file", "read_text_dir",
           "stdlib_dir", "stdlib_text", "corpus_text", "load_corpus", "validation_text", "split_train_val",
           "batchify", "BPTTStream", "DEFAULT_MAX_CHARS",
           "PAD", "UNK", "tokenize", "WordVocab", "sliding_windows", "nearest_words"]
