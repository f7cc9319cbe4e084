"""Stage ``time``: latency and throughput of both models over the batch-size x input-length grid.

The two sessions run in alternating windows (``quantsweep.timing``), so that both see the
same machine load; the speed-up of each window is kept, not only the mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantsweep.stages.context import JobRun
from quantsweep.stages.evaluate import Evaluations
from quantsweep.stages.load import Inputs

if TYPE_CHECKING:
    from quantsweep.records import TimingResult

NAME = "time"


def run(job: JobRun, inputs: Inputs, evaluations: Evaluations) -> TimingResult:
    from quantsweep.timing import time_models

    with job.clock(NAME):
        return time_models(
            evaluations.original_session,
            evaluations.quantized_session,
            job.cfg.benchmark,
            evaluations.settings,
            vocab_size=len(inputs.tokenizer),
            special_ids=list(inputs.tokenizer.all_special_ids),
            seed=job.cfg.seed,
        )
