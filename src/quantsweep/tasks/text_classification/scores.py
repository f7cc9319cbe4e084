"""Text classification's score records: scikit-learn's scores of one model, as results.json holds them.

Kept apart from the scoring so that reading a finished job's scores back imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LabelScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationResult:
    """scikit-learn's scores of one sequence classifier on the evaluation split (one label per row)."""

    accuracy: float
    # unweighted mean over the labels in the references or the predictions (sklearn's "macro")
    f1_macro: float
    # over all rows; with one label per row it equals accuracy (kept: users compare it across tools)
    f1_micro: float
    precision_macro: float
    recall_macro: float
    per_label: dict[str, LabelScores]
    num_samples: int
    # rows longer than the model's maximum length, classified from the tokens that fit
    num_truncated: int
    seconds: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassificationResult:
        values = dict(data)
        values["per_label"] = {k: LabelScores(**v) for k, v in data["per_label"].items()}
        return cls(**values)

    def truncation_note(self, max_length: int | None) -> str:
        limit = f"{max_length} tokens" if max_length else "the model's maximum length"
        return (
            f"{self.num_truncated} of {self.num_samples} evaluation texts are longer than {limit}: "
            "each is classified from the tokens that fit (for a pair, the longer text is cut first)."
        )
