"""Token classification's score records: seqeval's entity scores of one model, as results.json holds them.

Kept apart from the scoring (which needs numpy and seqeval) so that reading a finished
job's scores back imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EntityScores:
    precision: float
    recall: float
    f1: float
    number: int


@dataclass
class EvaluationResult:
    """seqeval scores of one model on the evaluation split (word level, first sub-token)."""

    precision: float
    recall: float
    f1: float
    accuracy: float
    per_entity: dict[str, EntityScores]
    num_samples: int
    # sentences longer than the model's maximum length; their cut-off words count as "O"
    num_truncated: int
    seconds: float
    # words cut off in those sentences (each scored as "O": a miss wherever its tag is not "O")
    truncated_words: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        values = dict(data)
        values["per_entity"] = {k: EntityScores(**v) for k, v in data["per_entity"].items()}
        return cls(**values)

    def truncation_note(self, max_length: int | None) -> str:
        """How many sentences and words the model's maximum length cut off, for the console and the card."""
        limit = f"{max_length} tokens" if max_length else "the model's maximum length"
        return (
            f"{self.num_truncated} of {self.num_samples} evaluation sentences are longer than {limit}: "
            f"{self.truncated_words} words past the cut score as 'O' (a miss wherever their tag is not 'O')."
        )
