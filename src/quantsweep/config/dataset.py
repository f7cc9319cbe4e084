"""The group ``dataset``: where the evaluation and calibration rows come from, checked before any load.

Its own module because a data source has the most ways to be wrong (blank names, a
mapping of split files that escapes ``dataset.path`` or shares a file between splits, a
single file asked for two splits), and :mod:`quantsweep.data` and every task read it.
Which columns a task needs is the task's to say (:mod:`quantsweep.tasks.checks`); only
their shape is checked here. Nothing here imports a heavy library: it only looks at paths.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from quantsweep.config.base import ConfigError, _blank, _Section, invalid

# Where the Hub keeps CoNLL-2003 in a form datasets >= 4 can read: the repository
# `conll2003` now points to holds a loading script, which datasets refuses, and the Hub's
# Parquet conversion of it lives on the revision below, one folder of Parquet files per
# config and split (conll2003/train/0000.parquet, ...). Those files carry the ClassLabel
# tag names in their schema, so the tags keep their CoNLL-2003 names.
PARQUET_CONVERSION_REVISION = "refs/convert/parquet"


@dataclass
class DatasetConfig(_Section):
    """Where the evaluation and calibration sentences come from.

    One source serves each split by name: a Hub dataset's split, a ``save_to_disk``
    DatasetDict's split, ``<split>.<ext>`` in a local folder, or the file named for the
    split in ``data_files``. A single local file (or one saved Dataset) has no splits, so it
    may serve one split only: :meth:`check_split_sources` refuses it as a second split,
    where calibration or exclusion=auto's held-out rows would silently be drawn from the
    evaluation rows.
    """

    KEY: ClassVar[str] = "dataset"

    # A Hub id; a local folder (a save_to_disk folder, <split>.txt/.conll/.jsonl/.parquet
    # files, the Hub's Parquet-conversion layout <config>/<split>/*.parquet, or the folder
    # `data_files` is relative to); or a single CoNLL-2003 text, JSON lines or Parquet file.
    path: str = "eriktks/conll2003"
    # the dataset config: for a Parquet conversion, the folder that holds its split folders
    name: str | None = "conll2003"
    # a branch, tag or commit of a Hub dataset; a commit pins the data
    revision: str | None = PARQUET_CONVERSION_REVISION
    # one file per split (a mapping split -> file name), relative to the local folder `path`,
    # e.g. {train: train.conll, validation: dev.conll}; null: files named by split (or the
    # splits of a Hub dataset). Typed Any because Hydra can neither merge a mapping into a
    # null Dict node nor add keys to an empty one; __post_init__ checks the type.
    data_files: Any = None
    eval_split: str = "validation"
    # the text columns: `primary` (and, for text pairs, `secondary`). Typed Any so that a
    # task's `secondary: null` can hold null; __post_init__ checks the type.
    data_keys: Any = field(default_factory=lambda: {"primary": "tokens"})
    ref_keys: list[str] = field(default_factory=lambda: ["ner_tags"])
    calibration_split: str | None = "train"
    # static quantization calibrates on rows of `calibration_split`; naming the evaluation
    # split there is refused (the quantized model would be scored on the rows that set its
    # ranges) unless this is true, which results.json's config then records
    calibrate_on_eval_split: bool = False
    max_eval_samples: int | None = None
    # names of integer tags, in id order, for data that stores plain ids without
    # ClassLabel names; null means the CoNLL-2003 order
    label_names: list[str] | None = None

    def check(self) -> None:
        self._check_names()
        if self.data_files is not None:
            self._check_data_files()
        if not isinstance(self.data_keys, Mapping) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in self.data_keys.items()
        ):
            raise invalid(
                "dataset.data_keys",
                self.data_keys,
                "name the text columns as a mapping, e.g. dataset.data_keys={primary: tokens}.",
            )
        if self.label_names is not None:
            self._check_label_names(self.label_names)
        if self.max_eval_samples is not None and self.max_eval_samples <= 0:
            raise invalid(
                "dataset.max_eval_samples",
                self.max_eval_samples,
                "use null for the whole split or a positive integer.",
            )

    def _check_names(self) -> None:
        """The source, the splits, the config and the revision are named, or null where they may be."""
        if _blank(self.path):
            raise invalid(
                "dataset.path", self.path, "give a Hub id, a save_to_disk folder or a local data file."
            )
        if _blank(self.eval_split):
            raise invalid(
                "dataset.eval_split", self.eval_split, "name the split to evaluate on, e.g. validation."
            )
        for key, value, default in (
            ("dataset.name", self.name, "no config name"),
            ("dataset.revision", self.revision, "the default branch"),
            ("dataset.calibration_split", self.calibration_split, "no calibration split"),
        ):
            if _blank(value):
                raise invalid(key, value, f"use null ({default}) or a non-empty name.")

    @staticmethod
    def _check_label_names(label_names: list[str]) -> None:
        if not label_names:
            # an empty list would read as "not given" and silently mean the default order
            raise invalid(
                "dataset.label_names",
                [],
                "use null (the column's ClassLabel names, or the CoNLL-2003 order for tags) or name the labels "
                "in id order, e.g. dataset.label_names=[negative,positive].",
            )
        if any(_blank(n) for n in label_names):
            raise invalid("dataset.label_names", list(label_names), "every label name must be non-empty.")
        if len(set(label_names)) != len(label_names):
            raise invalid("dataset.label_names", list(label_names), "each tag name may appear once.")

    def _check_data_files(self) -> None:
        example = "e.g. dataset.data_files={train: train.conll, validation: dev.conll}"
        files = self.data_files
        if not isinstance(files, Mapping) or not files:
            raise invalid("dataset.data_files", files, f"name one file per split, {example}, or use null.")
        for split, name in files.items():
            if (
                not isinstance(split, str)
                or not isinstance(name, str)
                or not split.strip()
                or not name.strip()
            ):
                raise invalid(
                    "dataset.data_files",
                    dict(files),
                    f"every split and file name must be a non-empty string, {example}.",
                )
            relative = PurePosixPath(name.replace("\\", "/"))
            if relative.is_absolute() or ".." in relative.parts:
                raise invalid(
                    "dataset.data_files",
                    dict(files),
                    f"{name!r} is not inside `dataset.path`; the files are named relative to that folder "
                    f"(so that a launcher that ships `dataset.path` ships them too), {example}.",
                )
        by_file: dict[str, list[str]] = {}
        for split, name in files.items():
            by_file.setdefault(posixpath.normpath(name.replace("\\", "/")), []).append(split)
        shared = {name: splits for name, splits in by_file.items() if len(splits) > 1}
        if shared:
            name, splits = next(iter(shared.items()))
            raise invalid(
                "dataset.data_files",
                dict(files),
                f"the splits {', '.join(splits)} all name {name!r}; each split needs its own file, or the rows "
                "that calibrate the model (or that exclusion=auto judges) would be the rows it is evaluated on.",
            )
        if self.eval_split not in files:
            raise invalid(
                "dataset.eval_split",
                self.eval_split,
                f"`dataset.data_files` names files for {', '.join(sorted(files))} only; add the evaluation "
                f"split, {example}.",
            )

    @property
    def split_files(self) -> dict[str, str]:
        """``data_files`` as checked: split -> file name inside ``path``; empty when not given."""
        return dict(self.data_files or {})

    @property
    def single_source(self) -> Path | None:
        """The local file, or folder holding one saved Dataset, that ``path`` names, if it is one.

        Such a source has no splits: any split asked of it returns the same rows.
        """
        if self.split_files:
            return None
        local = Path(self.path).expanduser()
        if local.is_file():
            return local
        # datasets' save_to_disk writes state.json for one Dataset, dataset_dict.json for splits
        if (
            local.is_dir()
            and (local / "state.json").is_file()
            and not (local / "dataset_dict.json").is_file()
        ):
            return local
        return None

    def check_split_sources(self, splits: Mapping[str, str | None]) -> None:
        """Refuse splits this config cannot serve apart; ``splits`` maps config keys to split names.

        A key whose split is None is not used by the run (e.g. calibration under dynamic
        quantization).
        """
        used = {key: split for key, split in splits.items() if split}
        files = self.split_files
        if files:
            for key, split in used.items():
                if split not in files:
                    raise invalid(
                        key,
                        split,
                        f"`dataset.data_files` names files for {', '.join(sorted(files))} only; add a "
                        f"file for {split!r}, or name one of those splits.",
                    )
            return
        single = self.single_source
        if single is None or len(set(used.values())) < 2:
            return
        roles = ", ".join(f"`{key}` ({split})" for key, split in used.items())
        raise ConfigError(
            f"Invalid configuration: `dataset.path` is {self.path!r}, a single "
            f"{'file' if single.is_file() else 'saved Dataset'} without splits, and this run reads it as "
            f"{roles}: every split would get the same rows, so the rows that calibrate the model (or that "
            "exclusion=auto judges) would be the rows it is evaluated on. Give each split its own file: point "
            "`dataset.path` at a folder and name the files in `dataset.data_files`, e.g. dataset.path=./conll "
            "dataset.data_files={train: train.conll, validation: dev.conll}, or use a folder holding "
            "<split>.txt / <split>.jsonl / <split>.parquet files. A single file can serve the evaluation "
            "split alone (quantization=dynamic)."
        )

    @property
    def tokens_column(self) -> str:
        return self.data_keys["primary"]

    @property
    def tags_column(self) -> str:
        return self.ref_keys[0]
