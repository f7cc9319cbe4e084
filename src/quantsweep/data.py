"""Tagged sentences in, model inputs out.

Loads one split of a token-classification dataset, resolves tag names, and tokenizes
word lists into model inputs that remember which word each sub-token came from.

The sources, each serving a split by its name: a Hub dataset (its Parquet conversion on
``refs/convert/parquet``, fetched through huggingface_hub's cache so that an offline run
finds it, else datasets' own loader); a local folder (``save_to_disk``, ``<split>.txt``,
``.jsonl`` or ``.parquet`` files, the conversion's ``<config>/<split>/*.parquet`` layout,
or the files named per split in ``dataset.data_files``); or a single CoNLL-2003 text, JSON
lines or Parquet file, which has no splits and so serves the evaluation split only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from quantsweep.config import PARQUET_CONVERSION_REVISION, DatasetConfig

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

CONLL_SUFFIXES = (".txt", ".conll", ".iob", ".iob2", ".tsv")
JSON_SUFFIXES = (".json", ".jsonl")
PARQUET_SUFFIXES = (".parquet",)
# How datasets >= 4 refuses a dataset that only a loading script can build.
SCRIPT_REFUSAL = "Dataset scripts are no longer supported"


class DataError(RuntimeError):
    """A dataset that cannot be loaded or read as tagged sentences; the message is for the user."""


def read_conll(path: Path) -> dict[str, list[list[str]]]:
    """Parse CoNLL-2003 column text: one token per line, the tag in the last column."""
    columns: dict[str, list[list[str]]] = {"tokens": [], "pos_tags": [], "chunk_tags": [], "ner_tags": []}
    sentence: list[list[str]] = []

    def flush() -> None:
        if sentence:
            columns["tokens"].append([row[0] for row in sentence])
            columns["ner_tags"].append([row[-1] for row in sentence])
            columns["pos_tags"].append([row[1] if len(row) >= 4 else "" for row in sentence])
            columns["chunk_tags"].append([row[2] if len(row) >= 4 else "" for row in sentence])
            sentence.clear()

    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                flush()
                continue
            parts = line.split()
            if len(parts) < 2:
                raise DataError(
                    f"{path}:{number}: a CoNLL line needs a token and a tag separated by white space, got {line!r}."
                )
            sentence.append(parts)
    flush()
    return columns


def _conll_column_names(path: Path) -> list[str] | None:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("-DOCSTART-"):
                width = len(line.split())
                return {4: ["tokens", "pos_tags", "chunk_tags", "ner_tags"], 2: ["tokens", "ner_tags"]}.get(
                    width
                )
    return None


def _load_conll(path: Path) -> tuple[Any, str]:
    """CoNLL text through datasets' own CoNLL builder where it has one (datasets >= 5), else our reader."""
    from importlib.util import find_spec

    names = _conll_column_names(path)
    if names is not None and find_spec("datasets.packaged_modules.conll") is not None:
        from datasets import load_dataset

        rows = load_dataset("conll", data_files=str(path), split="train", column_names=names)
        return rows, f"{path} (datasets conll builder)"
    return read_conll(path), str(path)


def _local_split_file(folder: Path, split: str) -> Path | None:
    for suffix in CONLL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES:
        candidate = folder / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _script_name(path: str) -> str:
    """The loading script datasets looks for in a dataset named ``path``: its last component + .py."""
    name = path.replace("\\", "/").rstrip("/").split("/")[-1]
    return name if name.endswith(".py") else f"{name}.py"


def _script_refusal(cfg: DatasetConfig, script: str) -> DataError:
    """The one paragraph for a dataset that only a loading script can build."""
    default = DatasetConfig()
    local = Path(cfg.path).expanduser().exists()
    at = "" if local else f" (revision {cfg.revision or 'main'!r})"
    repository = " (the repository, not its script)" if cfg.path.endswith(".py") else ""
    return DataError(
        f"`dataset.path` {cfg.path!r}{at} is a dataset defined by a loading script ({script}); datasets 4 and "
        "later refuse loading scripts, and quantsweep does not run them. The Hugging Face Hub keeps a Parquet "
        f"conversion of such a dataset on the revision `{PARQUET_CONVERSION_REVISION}`, one folder per config: "
        f"set `dataset.path` to its Hub id{repository}, `dataset.revision={PARQUET_CONVERSION_REVISION}` and "
        "`dataset.name` to the config (its folder there, often `default`)"
        + (
            f"; for CoNLL-2003 that is dataset.path={default.path} dataset.name={default.name} "
            f"dataset.revision={default.revision}, quantsweep's defaults."
            if _script_name(cfg.path) == _script_name(default.path)
            else "."
        )
    )


def _conversion_split_dirs(config_dir: Path, split: str) -> tuple[list[Path], bool]:
    """The folders of one split in the Hub's Parquet-conversion layout, and whether it is partial.

    The converter writes ``<config>/<split>/NNNN.parquet``; ``partial-<split>`` when it
    converted only the first part of a large split, and ``<split>-partN`` folders when a
    split has more than 10,000 files.
    """
    for prefix, partial in (("", False), ("partial-", True)):
        whole = config_dir / f"{prefix}{split}"
        parts = sorted(config_dir.glob(f"{prefix}{split}-part[0-9]*"))
        found = [d for d in [whole, *parts] if d.is_dir() and any(d.glob("*.parquet"))]
        if found:
            return found, partial
    return [], False


def _conversion_files(
    root: Path, cfg: DatasetConfig, split: str, where: str
) -> tuple[list[Path], str] | None:
    """The Parquet files of ``split`` when ``root`` holds the Hub's conversion layout, else None."""
    configs = sorted(d.name for d in root.iterdir() if d.is_dir() and _conversion_split_dirs(d, split)[0])
    if cfg.name is not None and cfg.name not in configs:
        if not configs:
            return None
        raise DataError(
            f"`dataset.name` is {cfg.name!r}, but {where} holds split {split!r} in the Parquet conversion layout "
            f"<config>/{split}/*.parquet for the configs {configs} only; set `dataset.name` to one of them."
        )
    if cfg.name is None:
        if not configs:
            return None
        if len(configs) > 1:
            raise DataError(
                f"`dataset.name` is None, but {where} holds split {split!r} for the configs {configs}; "
                "set `dataset.name` to one of them."
            )
    config = cfg.name or configs[0]
    folders, partial = _conversion_split_dirs(root / config, split)
    files = sorted(f for folder in folders for f in folder.glob("*.parquet"))
    if partial:
        log.warning(
            "%s holds only a partial Parquet conversion of split %r (the Hub converts the first part of large "
            "splits): the rows are not the whole split.",
            where,
            split,
        )
    return files, config + (" (partial conversion)" if partial else "")


def _read_files(builder: str, files: Sequence[Path]) -> Any:
    from datasets import load_dataset

    return load_dataset(builder, data_files=[str(f) for f in files], split="train")


def _read_file(cfg: DatasetConfig, file: Path, key: str) -> tuple[Any, str]:
    """One local data file, by its suffix."""
    if not file.is_file():
        raise DataError(f"`{key}` names {str(file)!r}, which is not a file.")
    if file.suffix in CONLL_SUFFIXES:
        return _load_conll(file)
    if file.suffix == ".py":
        raise _script_refusal(cfg, file.name)
    builder = (
        "json" if file.suffix in JSON_SUFFIXES else "parquet" if file.suffix in PARQUET_SUFFIXES else None
    )
    if builder is None:
        raise DataError(
            f"`{key}` names {file.name}, whose format quantsweep cannot tell; use CoNLL text "
            f"({', '.join(CONLL_SUFFIXES)}), JSON lines (.jsonl) or Parquet (.parquet)."
        )
    return _read_files(builder, [file]), str(file)


def _load_local(cfg: DatasetConfig, path: Path, split: str) -> tuple[Any, str]:
    if cfg.split_files:
        if not path.is_dir():
            raise DataError(
                f"`dataset.data_files` names files inside `dataset.path`, which must then be a folder; "
                f"{cfg.path!r} is a file. Set `dataset.path` to the folder that holds the files."
            )
        # the split has an entry: DatasetConfig checks the evaluation split's, load_split the others'
        return _read_file(cfg, path / cfg.split_files[split], f"dataset.data_files.{split}")
    if not path.is_dir():
        return _read_file(cfg, path, "dataset.path")
    if _is_saved_dataset(path):
        from datasets import DatasetDict, load_from_disk

        saved = load_from_disk(str(path))
        if isinstance(saved, DatasetDict):
            if split not in saved:
                raise DataError(
                    f"`dataset.path` {cfg.path!r} holds the splits {sorted(saved)}; split {split!r} is not one of them."
                )
            return saved[split], f"{path} (save_to_disk)"
        return saved, f"{path} (save_to_disk)"
    file = _local_split_file(path, split)
    if file is not None:
        return _read_file(cfg, file, "dataset.path")
    converted = _conversion_files(path, cfg, split, f"`dataset.path` {cfg.path!r}")
    if converted is not None:
        files, config = converted
        return _read_files("parquet", files), f"{path}/{config}"
    if (path / _script_name(str(path.resolve()))).is_file():
        raise _script_refusal(cfg, _script_name(str(path.resolve())))
    raise DataError(
        f"`dataset.path` {cfg.path!r} is a folder without a file for split {split!r}; "
        f"expected {split}.txt/.conll (CoNLL-2003 columns), {split}.jsonl or {split}.parquet, "
        f"<config>/{split}/*.parquet (the Hub's Parquet conversion), a folder written by datasets' save_to_disk, "
        "or files named per split in `dataset.data_files`."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().rstrip(".")
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _hub_snapshot(cfg: DatasetConfig, split: str) -> tuple[Path | None, str]:
    """The Hub repository's files this split needs, at ``dataset.revision``: (folder, why not).

    huggingface_hub fetches them into its cache (HF_HUB_CACHE), or, offline, finds the
    snapshot a ref or commit names there. datasets' own Hub loader cannot read that cache
    offline (it gives up before looking), which is why the files are fetched here.
    """
    from huggingface_hub import snapshot_download

    config = cfg.name or "*"
    patterns = [
        f"{config}/{prefix}{split}{part}/*.parquet" for prefix in ("", "partial-") for part in ("", "-part*")
    ]
    try:
        folder = snapshot_download(
            cfg.path,
            repo_type="dataset",
            revision=cfg.revision,
            allow_patterns=[*patterns, _script_name(cfg.path)],
        )
    except Exception as error:  # not cached offline, no such repo or revision, Hub down
        return None, _first_line(error)
    return Path(folder), ""


def _load_hub(cfg: DatasetConfig, split: str) -> tuple[Any, str]:
    """A Hub dataset: its Parquet conversion layout if the revision has one, else datasets' loader."""
    revision = cfg.revision or "main"
    snapshot, snapshot_error = _hub_snapshot(cfg, split)
    if snapshot is not None and snapshot.is_dir():
        where = f"{cfg.path} at revision {revision!r}"
        converted = _conversion_files(snapshot, cfg, split, where)
        if converted is not None:
            files, config = converted
            source = f"hub:{cfg.path}/{config}@{revision} (commit {snapshot.name})"
            return _read_files("parquet", files), source
        if (snapshot / _script_name(cfg.path)).is_file():
            raise _script_refusal(cfg, _script_name(cfg.path))
        snapshot_error = f"its snapshot of {where} (commit {snapshot.name}) has no {cfg.name or '<config>'}/{split}/*.parquet"
    from datasets import load_dataset

    try:
        rows = load_dataset(cfg.path, cfg.name, split=split, revision=cfg.revision)
    except Exception as error:
        if SCRIPT_REFUSAL in str(error):
            raise _script_refusal(cfg, _script_name(cfg.path)) from error
        cached = (
            f" Nor could huggingface_hub fetch it or find it in the Hub cache (HF_HUB_CACHE): {snapshot_error}."
            if snapshot_error
            else ""
        )
        raise DataError(
            f"Could not load dataset `dataset.path` {cfg.path!r} (`dataset.name` {cfg.name!r}, `dataset.revision` "
            f"{cfg.revision!r}, split {split!r}) from the Hugging Face Hub: {_first_line(error)}.{cached} "
            "Without network access, point `dataset.path` at local data instead: a folder written by "
            "datasets' save_to_disk, a CoNLL-2003 column text file, a .jsonl or .parquet file, or a folder "
            "holding <split>.txt / <split>.jsonl / <split>.parquet files (or the files named in "
            "`dataset.data_files`)."
        ) from error
    return rows, f"hub:{cfg.path}" + (f"/{cfg.name}" if cfg.name else "") + f"@{revision}"


def read_split(cfg: DatasetConfig, split: str) -> tuple[Any, str]:
    """One split's rows as columns or a datasets.Dataset, and a description of their source.

    The reader every task shares. Every job reads ``cfg.eval_split``; any other split it
    reads (calibration, held-out rows) must come from a source of its own, never the
    evaluation rows again.
    """
    if split != cfg.eval_split:
        role = "dataset.calibration_split" if split == cfg.calibration_split else "exclusion.holdout_split"
        cfg.check_split_sources({"dataset.eval_split": cfg.eval_split, role: split})
    return _load_rows(cfg, split)


def _load_rows(cfg: DatasetConfig, split: str) -> tuple[Any, str]:
    path = Path(cfg.path).expanduser()
    if path.exists():
        return _load_local(cfg, path, split)
    if cfg.split_files:
        raise DataError(
            f"`dataset.data_files` names files inside `dataset.path`, which must then be a local folder; "
            f"{cfg.path!r} is not one. A Hub dataset's splits are chosen by name (`dataset.eval_split`, "
            "`dataset.calibration_split`): set `dataset.data_files=null`, or `dataset.path` to the folder."
        )
    return _load_hub(cfg, split)


def check_label_ids(
    rows: Iterable[Sequence[int]], names: Sequence[str], where: str, per_word: bool = True
) -> None:
    """Refuse the first label id that names no label, with its row (and word) and value.

    Ids index ``names``: a negative one would silently pick a label from the end (-1, the
    last) or fail later with an IndexError (-100), and one past the end has no name.
    ``where`` is the column, e.g. "the tag column 'ner_tags' of <source>".
    """
    noun = "tag" if per_word else "label"
    for row, ids in enumerate(rows):
        for word, value in enumerate(ids):
            if 0 <= value < len(names):
                continue
            at = f"Row {row}" + (f" (word {word})" if per_word else "") + f" of {where}"
            if value < 0:
                raise DataError(
                    f"{at} holds the id {value}: {noun} ids run from 0 to {len(names) - 1} ({list(names)}), and "
                    "negative ids mark rows or words without a label (-1 in GLUE's test splits, -100 for "
                    "sub-tokens a training loss ignores, in data already aligned to a tokenizer). quantsweep "
                    "reads every row of the splits it loads with its label"
                    + (", one tag per word" if per_word else "")
                    + ", so name labelled splits, e.g. dataset.eval_split=validation."
                )
            raise DataError(
                f"{at} holds the id {value}, but only {len(names)} {noun} names are known ({list(names)}); set "
                "`dataset.label_names` to the full list in id order."
            )


class Rows(Protocol):
    """What sampling needs of a task's rows (tagged sentences, labelled texts)."""

    def __len__(self) -> int: ...

    def take(self, indices: Sequence[int]) -> Any: ...  # the same type as self


RowsT = TypeVar("RowsT", bound=Rows)


def sample_rows(data: RowsT, count: int, seed: int) -> RowsT:
    """``count`` rows drawn without replacement by a seeded shuffle (all rows if fewer)."""
    order = np.random.default_rng(seed).permutation(len(data))[: min(count, len(data))]
    return data.take([int(i) for i in order])


def held_out_rows(data: RowsT, sampled: int, count: int, seed: int) -> RowsT:
    """The ``count`` rows that follow the ``sampled`` rows of :func:`sample_rows`'s shuffle.

    Disjoint from those rows by construction (the same seeded permutation), so a slice
    held out from calibration never contains a sentence that calibrated the model.
    """
    order = np.random.default_rng(seed).permutation(len(data))[sampled : sampled + count]
    return data.take([int(i) for i in order])
