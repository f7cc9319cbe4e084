"""Tiny, offline stand-ins for a Hub model and CoNLL-2003: random weights, small vocabulary.

The test suite builds its models and data with these, and so does the offline smoke
sweep (``python -m quantsweep.testing OUT_DIR``): they exercise the whole pipeline in
seconds without network. Their accuracy means nothing (the weights are random).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from quantsweep.tasks.token_classification.rows import CONLL2003_LABELS

if TYPE_CHECKING:
    from datasets import Features

LABELS = list(CONLL2003_LABELS)
# The other two tag columns of CoNLL-2003 as datasets' conll2003 builder names them, so
# that Parquet written here has the schema of the Hub's conversion of that dataset.
# fmt: off
CONLL2003_POS_TAGS = [
    '"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR",
    "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS",
    "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB",
]
CONLL2003_CHUNK_TAGS = [
    "O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ", "I-INTJ", "B-LST", "I-LST",
    "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT", "B-SBAR", "I-SBAR", "B-UCP", "I-UCP", "B-VP", "I-VP",
]
# fmt: on

PERSONS = [["anna", "berg"], ["tom", "miller"], ["li", "wei"], ["omar"], ["sara", "lund"]]
ORGS = [["acme", "corp"], ["union", "bank"], ["red", "cross"], ["nordic", "rail", "group"]]
LOCS = [["berlin"], ["new", "york"], ["oslo"], ["cape", "town"], ["lima"]]
MISCS = [["german"], ["olympic", "games"], ["euro"]]
FILLERS = ["the", "a", "said", "met", "in", "on", "visited", "from", "with", "and", "today", "report", "."]

# Words the tokenizer splits into sub-tokens, so first-sub-token alignment is exercised.
SPLIT_WORDS = {"berlin": ["ber", "##lin"], "miller": ["mill", "##er"], "nordic": ["nor", "##dic"]}


def vocabulary() -> list[str]:
    words: set[str] = set(FILLERS)
    for group in (PERSONS, ORGS, LOCS, MISCS):
        for entity in group:
            words.update(entity)
    pieces: set[str] = set()
    for word in list(words):
        if word in SPLIT_WORDS:
            words.discard(word)
            pieces.update(SPLIT_WORDS[word])
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return specials + sorted(words | pieces)


def sentences(count: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out: list[tuple[list[str], list[str]]] = []
    for _ in range(count):
        tokens: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(1, 3)):
            tokens.extend(rng.sample(FILLERS, rng.randint(1, 3)))
            tags.extend(["O"] * (len(tokens) - len(tags)))
            kind, group = rng.choice([("PER", PERSONS), ("ORG", ORGS), ("LOC", LOCS), ("MISC", MISCS)])
            entity = rng.choice(group)
            tokens.extend(w.capitalize() if rng.random() < 0.5 else w for w in entity)
            tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1))
        tokens.append(".")
        tags.append("O")
        out.append((tokens, tags))
    return out


def write_conll(path: Path, rows: list[tuple[list[str], list[str]]]) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for tokens, tags in rows:
        lines.extend(f"{token} NN I-NP {tag}" for token, tag in zip(tokens, tags, strict=True))
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_dataset(folder: Path, train: int = 40, validation: int = 24) -> Path:
    write_conll(folder / "train.txt", sentences(train, seed=1))
    write_conll(folder / "validation.txt", sentences(validation, seed=2))
    return folder


def conll2003_features() -> Features:
    """The features of CoNLL-2003 in datasets: word lists and three ClassLabel tag columns."""
    from datasets import ClassLabel, Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "tokens": Sequence(Value("string")),
            "pos_tags": Sequence(ClassLabel(names=CONLL2003_POS_TAGS)),
            "chunk_tags": Sequence(ClassLabel(names=CONLL2003_CHUNK_TAGS)),
            "ner_tags": Sequence(ClassLabel(names=LABELS)),
        }
    )


def write_conll2003_parquet(path: Path, rows: list[tuple[list[str], list[str]]]) -> Path:
    """Rows as Parquet the way datasets writes it: the features (tag names) in the schema metadata."""
    from datasets import Dataset

    features = conll2003_features()
    pos, chunk, ner = (features[c].feature for c in ("pos_tags", "chunk_tags", "ner_tags"))
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(rows))],
            "tokens": [tokens for tokens, _ in rows],
            "pos_tags": [[pos.str2int("NN")] * len(tokens) for tokens, _ in rows],
            "chunk_tags": [[chunk.str2int("I-NP")] * len(tokens) for tokens, _ in rows],
            "ner_tags": [[ner.str2int(tag) for tag in tags] for _, tags in rows],
        },
        features=features,
    ).to_parquet(str(path))
    return path


def write_hub_cache(hub_cache: Path, repo_id: str, revision: str, files: dict[str, Path]) -> str:
    """Put ``files`` (path in the repo -> local file) into a Hub cache as one dataset commit.

    The layout huggingface_hub writes when it downloads them: content-addressed blobs,
    a snapshot folder per commit whose files link to the blobs, and ``refs/<revision>``
    holding the commit. Returns the (made-up, content-derived) commit hash.
    """
    repo = hub_cache / f"datasets--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(
        "".join(
            f"{name}:{hashlib.sha256(files[name].read_bytes()).hexdigest()}\n" for name in sorted(files)
        ).encode()
    ).hexdigest()
    for name, source in files.items():
        content = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return commit


def write_model(folder: Path, arch: str = "distilbert", seed: int = 0) -> Path:
    """A randomly initialised token-classification model with a real fast tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertForTokenClassification,
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertForTokenClassification,
        DistilBertTokenizerFast,
    )

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    common = {
        "vocab_size": len(vocab),
        "max_position_embeddings": 256,
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
    }
    model: torch.nn.Module
    tokenizer: BertTokenizerFast | DistilBertTokenizerFast
    if arch == "distilbert":
        model = DistilBertForTokenClassification(
            DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=2, **common)
        )
        tokenizer = DistilBertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    elif arch == "bert":
        model = BertForTokenClassification(
            BertConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, **common
            )
        )
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    else:
        raise ValueError(arch)
    model.save_pretrained(folder)
    tokenizer.model_max_length = 256
    tokenizer.save_pretrained(folder)
    return folder


def plant_sensitive_node(model_dir: Path, layer: int = 1, outlier: float = 1000.0) -> str:
    """Make one node of a tiny DistilBERT fragile under static quantization, on purpose.

    One hidden unit of layer ``layer``'s feed-forward block gets a bias of ``outlier``,
    and its outgoing weights are zeroed, so the fp32 model computes exactly what it did
    before the unit was touched in every other respect, but the activation entering the
    second feed-forward MatMul spans [0, outlier]: a per-tensor 8-bit range that wide
    rounds every ordinary value to zero. Returns the name of that MatMul in the export.
    """
    import torch
    from transformers import DistilBertForTokenClassification

    model = DistilBertForTokenClassification.from_pretrained(model_dir)
    ffn = model.distilbert.transformer.layer[layer].ffn
    with torch.no_grad():
        ffn.lin1.bias[0] = outlier
        ffn.lin2.weight[:, 0] = 0.0
        # a feed-forward block that matters to the prediction, so losing it shows in F1
        ffn.lin2.weight.mul_(50.0)
    model.save_pretrained(model_dir)
    return f"/distilbert/transformer/layer.{layer}/ffn/lin2/MatMul"


def self_labelled_rows(
    model_dir: Path, rows: list[tuple[list[str], list[str]]]
) -> list[tuple[list[str], list[str]]]:
    """The same sentences tagged with the model's own first-sub-token predictions.

    A random model scores nothing against real tags; against its own predictions the
    fp32 model scores F1 = 1, and any F1 lost is what quantization changed.
    """
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labelled: list[tuple[list[str], list[str]]] = []
    for tokens, _ in rows:
        encoding = tokenizer(tokens, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            label_ids = model(**encoding).logits[0].argmax(-1).tolist()
        tags = ["O"] * len(tokens)
        previous = None
        for position, word in enumerate(encoding.word_ids(0)):
            if word is not None and word != previous:
                tags[word] = model.config.id2label[label_ids[position]]
            previous = word
        labelled.append((tokens, tags))
    return labelled


def write_self_labelled_dataset(
    model_dir: Path, folder: Path, train: int = 160, validation: int = 48
) -> Path:
    write_conll(folder / "train.txt", self_labelled_rows(model_dir, sentences(train, seed=1)))
    write_conll(folder / "validation.txt", self_labelled_rows(model_dir, sentences(validation, seed=2)))
    return folder


# The tiny classifier's labels as its config.json names them; its datasets name them in lower
# case, as GLUE's ClassLabels do against models' upper-case id2label (matched case aside).
CLASSIFIER_LABELS = ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def write_classifier(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised DistilBERT sequence classifier with a real fast tokenizer."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = DistilBertConfig(
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=256,
        id2label=dict(enumerate(CLASSIFIER_LABELS)),
        label2id={label: i for i, label in enumerate(CLASSIFIER_LABELS)},
    )
    model = DistilBertForSequenceClassification(config).eval()
    tokenizer = DistilBertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.model_max_length = 256
    with torch.no_grad():
        # a random head predicts one class for nearly every row: centre its logits on some
        # sentences and widen them, so that the rows spread over the classes
        sample = tokenizer(
            [" ".join(t) for t, _ in sentences(64, seed=99)], padding=True, return_tensors="pt"
        )
        logits = model(**sample).logits
        model.classifier.bias.sub_(logits.mean(0))
        scale = 1.0 / logits.std(0).clamp_min(1e-6)
        model.classifier.weight.mul_(scale[:, None])
        model.classifier.bias.mul_(scale)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_classification_dataset(
    model_dir: Path, folder: Path, train: int = 160, validation: int = 48, pairs: bool = False
) -> Path:
    """``<split>.parquet`` with a ``sentence`` (and, ``pairs``, a ``second``) column and a ClassLabel
    ``label``: the model's own prediction, so that the fp32 model scores accuracy 1 and any
    accuracy lost is what quantization changed."""
    import torch
    from datasets import ClassLabel, Dataset, Features, Value
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = [model.config.id2label[i].lower() for i in range(model.config.num_labels)]
    columns = {"sentence": Value("string"), **({"second": Value("string")} if pairs else {})}
    features = Features({**columns, "label": ClassLabel(names=names)})
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 1), ("validation", validation, 2)):
        texts = [" ".join(tokens) for tokens, _ in sentences(count, seed)]
        seconds = [" ".join(tokens) for tokens, _ in sentences(count, seed + 10)] if pairs else None
        with torch.no_grad():
            encoding = tokenizer(texts, seconds, padding=True, return_tensors="pt")
            labels = model(**encoding).logits.argmax(-1).tolist()
        rows = {"sentence": texts, **({"second": seconds} if seconds else {}), "label": labels}
        Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}.parquet"))
    return folder


# Overrides that make a `quantsweep` job on a tiny model quick: one short timing shape, no MLflow.
FAST_JOB = (
    "benchmark.duration=0.04",
    "benchmark.batch_sizes=[1]",
    "benchmark.input_lengths=[8]",
    "benchmark.warmup=1",
    "benchmark.windows=1",
    "benchmark.threads=1",
    "mlflow.enabled=false",
)


def run_module(
    module: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    fresh: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` offline (Hub look-ups fail at once), as a user would.

    The run is a process of its own, forked from an interpreter that has imported the heavy
    libraries already (:mod:`quantsweep.testing.prewarmed`); ``fresh=True`` starts a new
    interpreter instead, for tests of the command's own start-up.
    """
    return _run_offline(
        ["-m", module, *args], f"{module} {' '.join(args)}", cwd, check, env, timeout, prewarmed=not fresh
    )


def run_module_code(
    code: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args`` offline, in a fresh interpreter with its own environment.

    huggingface_hub and datasets read their cache folders and offline flags once, at
    import; a test that points them elsewhere needs a new process.
    """
    return _run_offline(["-c", code, *args], "python -c ...", cwd, check, env, timeout)


def _run_offline(
    argv: list[str],
    label: str,
    cwd: Path,
    check: bool,
    env: dict[str, str] | None,
    timeout: float,
    prewarmed: bool = False,
) -> subprocess.CompletedProcess[str]:
    from quantsweep.testing import prewarmed as zygote

    full_env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env or {})
    )
    result = zygote.run(argv[1], argv[2:], cwd, full_env, timeout) if prewarmed and argv[0] == "-m" else None
    if result is None:
        result = subprocess.run(
            [sys.executable, *argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
    if check and result.returncode != 0:
        raise AssertionError(f"{label} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a tiny random model and tiny CoNLL data for offline runs."
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--arch", choices=["distilbert", "bert"], default="distilbert")
    args = parser.parse_args(argv)
    model = write_model(args.out_dir / f"tiny-{args.arch}", args.arch)
    data = write_dataset(args.out_dir / "tiny-conll")
    print(f"model_name_or_path={model} dataset.path={data}")


if __name__ == "__main__":
    main()
