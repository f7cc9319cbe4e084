"""The offline demo: a generated NER corpus and a real encoder fine-tuned on it."""
