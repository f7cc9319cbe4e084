"""Stage ``load``: the model's config and tokenizer and the data, checked before any heavy work.

Cheap and first: a label mismatch, a timing shape the model cannot take or a held-out
slice too short for ``exclusion=auto`` is refused here, in one paragraph, before the export.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quantsweep.config import ConfigError, RunConfig
from quantsweep.stages.context import JobRun

if TYPE_CHECKING:
    from quantsweep.tasks import TaskRows

NAME = "load"

log = logging.getLogger("quantsweep.job")


@dataclass(frozen=True)
class Inputs:
    model_config: Any  # transformers' PretrainedConfig
    tokenizer: Any  # transformers' PreTrainedTokenizerBase
    eval_data: TaskRows
    id2label: dict[int, str]
    calibration_data: TaskRows | None  # static quantization only
    holdout_data: TaskRows | None  # exclusion=auto only

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0


def run(job: JobRun) -> Inputs:
    from quantsweep.export import load_model_config, load_tokenizer

    cfg = job.cfg
    with job.clock(NAME):
        model_config = load_model_config(cfg.model_name_or_path, cfg.revision)
        tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.revision)
        check_input_lengths(cfg, model_config, tokenizer)
        eval_data = job.task.load(cfg.dataset, cfg.dataset.eval_split, cfg.dataset.max_eval_samples)
        log.info(
            "Evaluation data: %d %s of %s (split %s)",
            len(eval_data),
            job.task.ROWS,
            eval_data.source,
            eval_data.split,
        )
        id2label = {int(k): str(v) for k, v in (model_config.id2label or {}).items()}
        job.task.check_labels(id2label, eval_data)
        calibration_data, holdout_data = _calibration_rows(job) if cfg.is_static else (None, None)
    return Inputs(model_config, tokenizer, eval_data, id2label, calibration_data, holdout_data)


def _calibration_rows(job: JobRun) -> tuple[TaskRows, TaskRows | None]:
    """The calibration sample, and (exclusion=auto) the held-out rows the search scores on."""
    from quantsweep.data import held_out_rows, sample_rows

    cfg = job.cfg
    assert cfg.dataset.calibration_split is not None
    if cfg.dataset.calibration_split == cfg.dataset.eval_split:  # allowed by dataset.calibrate_on_eval_split
        log.warning(
            "Calibrating on the evaluation split %s (dataset.calibrate_on_eval_split=true): the quantized "
            "model is scored on rows that may have set its ranges, so its metrics may flatter it.",
            cfg.dataset.eval_split,
        )
    full = job.task.load(cfg.dataset, cfg.dataset.calibration_split)
    calibration = sample_rows(full, cfg.calibration.num_calibration_samples, cfg.seed)
    if len(calibration) < cfg.calibration.num_calibration_samples:
        log.warning(
            "calibration.num_calibration_samples=%d but split %s has only %d rows; using all of them.",
            cfg.calibration.num_calibration_samples,
            cfg.dataset.calibration_split,
            len(calibration),
        )
    if not cfg.exclusion.auto:
        return calibration, None
    split = cfg.exclusion.holdout_split
    if split in (None, cfg.dataset.calibration_split):
        holdout = held_out_rows(full, len(calibration), cfg.exclusion.holdout_samples, cfg.seed)
        check_holdout(cfg, len(full), len(calibration), len(holdout))
    else:
        assert split is not None
        other = job.task.load(cfg.dataset, split)
        holdout = sample_rows(other, cfg.exclusion.holdout_samples, cfg.seed)
        check_holdout(cfg, len(other), 0, len(holdout))
    return calibration, holdout


def check_input_lengths(cfg: RunConfig, model_config: Any, tokenizer: Any) -> None:
    """Refuse timing shapes the model cannot take, before the export rather than after it.

    Both the benchmark's lengths and, for ``exclusion=auto``'s speed objective, the shape
    every candidate is timed at (``exclusion.timing_shape``; its default, the longest
    benchmark length, is covered by the first check).
    """
    from quantsweep.config import SearchObjective

    limits = {
        "max_position_embeddings in its config.json": getattr(model_config, "max_position_embeddings", None),
        "model_max_length of its tokenizer": getattr(tokenizer, "model_max_length", None),
    }
    # tokenizers without a limit report a huge sentinel (int(1e30)); only real limits count
    known = {what: int(n) for what, n in limits.items() if isinstance(n, int) and 0 < n < 1_000_000}
    if not known:
        return
    what, limit = min(known.items(), key=lambda item: item[1])
    too_long = [n for n in cfg.benchmark.input_lengths if n > limit]
    if too_long:
        allowed = [n for n in cfg.benchmark.input_lengths if n <= limit] or [limit]
        raise ConfigError(
            f"Invalid configuration: `benchmark.input_lengths` is {list(cfg.benchmark.input_lengths)}, but "
            f"{cfg.model_name_or_path} accepts at most {limit} tokens ({what}), so {too_long} cannot be timed. "
            f"Use lengths up to {limit}, e.g. benchmark.input_lengths={allowed}."
        )
    shape = cfg.exclusion.timing_shape
    timed = cfg.exclusion.auto and cfg.exclusion.objective is SearchObjective.speed
    if timed and shape is not None and shape[1] > limit:
        raise ConfigError(
            f"Invalid configuration: `exclusion.timing_shape` is {list(shape)}, but {cfg.model_name_or_path} "
            f"accepts at most {limit} tokens ({what}), so candidates cannot be timed at length {shape[1]}. "
            f"Use a length up to {limit}, e.g. exclusion.timing_shape=[{shape[0]},{limit}], or null for batch 1 "
            "at the longest `benchmark.input_lengths`."
        )


def check_holdout(cfg: RunConfig, split_rows: int, calibration_rows: int, holdout_rows: int) -> None:
    """Refuse a search whose held-out slice would be short, before any heavy work.

    Short of ``exclusion.holdout_samples``, or (the rows really held out, as the config
    counted them) leaving the search or its confirmation under MIN_BOOTSTRAP_ROWS.
    """
    from quantsweep.config import MIN_BOOTSTRAP_ROWS, held_out_rows_needed

    if holdout_rows >= cfg.exclusion.holdout_samples:
        cfg.exclusion.check_rows(holdout_rows)
        return
    fraction = cfg.exclusion.confirm_fraction
    needed = held_out_rows_needed(fraction)
    floor = (
        f" Its paired bootstrap needs at least {needed} held-out rows at confirm_fraction={fraction} "
        f"({MIN_BOOTSTRAP_ROWS} to search on"
        + (f" and {MIN_BOOTSTRAP_ROWS} to confirm on)." if fraction else ").")
    )
    split = cfg.exclusion.holdout_split or cfg.dataset.calibration_split
    if calibration_rows:
        where = (
            f"rows of the calibration split `{split}` that calibration does not use, and that split has "
            f"{split_rows} rows of which calibration takes {calibration_rows}, leaving {holdout_rows}. Lower "
            "`exclusion.holdout_samples` or `calibration.num_calibration_samples`, or name a larger split in "
            "`exclusion.holdout_split`"
        )
    else:
        where = (
            f"rows of `exclusion.holdout_split` `{split}`, which has {split_rows}. Lower "
            "`exclusion.holdout_samples` or name a larger split"
        )
    raise ConfigError(
        f"Invalid configuration: `exclusion.holdout_samples` is {cfg.exclusion.holdout_samples}; "
        f"exclusion=auto judges F1 on {where} (never the evaluation split, so that its metrics stay an "
        f"honest test).{floor}"
    )
