"""Stage ``plan``: what will be quantized, before anything is: exclusions, request, optimum config.

Resolves the exclusion patterns against the exported graph, builds the quantization
request and optimum's config for the CPU, and fixes the sequence length every later stage
encodes to. ``exclusion=auto`` replaces the plan's exclusions later (:meth:`Plan.excluding`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from quantsweep.stages.context import JobRun
from quantsweep.stages.load import Inputs

if TYPE_CHECKING:
    from quantsweep.exclusion import ResolvedExclusion
    from quantsweep.export import ExportedModel
    from quantsweep.quantize import QuantizationRequest

NAME = "plan"

log = logging.getLogger("quantsweep.job")


@dataclass(frozen=True)
class Plan:
    exclusion: ResolvedExclusion
    request: QuantizationRequest
    qconfig: Any  # optimum's OrtQuantizationConfig
    instruction_set: str
    detected: bool  # the instruction set was detected on this CPU, not named by the config
    max_length: int  # sequences longer than this (in sub-tokens) are cut

    @property
    def excluded(self) -> list[str]:
        """The nodes kept in fp32, in the order the quantizer is given them."""
        return list(self.request.nodes_to_exclude)

    def excluding(self, nodes: list[str]) -> Plan:
        """The same plan with exactly these nodes kept in fp32 (an exclusion search's choice)."""
        from quantsweep.exclusion import ResolvedExclusion
        from quantsweep.quantize import build_quantization_config

        request = replace(self.request, nodes_to_exclude=list(nodes))
        qconfig, isa, detected = build_quantization_config(request)
        return replace(
            self,
            exclusion=ResolvedExclusion(by_pattern={}, explicit=list(nodes)),
            request=request,
            qconfig=qconfig,
            instruction_set=isa,
            detected=detected,
        )


def run(job: JobRun, inputs: Inputs, exported: ExportedModel) -> Plan:
    import onnx

    from quantsweep.exclusion import resolve_exclusions
    from quantsweep.quantize import QuantizationRequest, build_quantization_config

    cfg = job.cfg
    with job.clock(NAME):
        exclusion = resolve_exclusions(
            onnx.load(str(exported.onnx_path)),
            cfg.exclusion.start_from if cfg.exclusion.auto else cfg.exclusion.nodes,
            "exclusion.start_from" if cfg.exclusion.auto else "exclusion.nodes",
        )
        for pattern in exclusion.empty_patterns:
            log.warning("Exclusion pattern %r matched no node in this graph; it excludes nothing.", pattern)
        if not cfg.exclusion.auto:
            log.info(
                "Nodes kept in fp32: %d (%s)",
                len(exclusion.node_names),
                {p: len(m) for p, m in exclusion.by_pattern.items()},
            )
        request = QuantizationRequest(
            is_static=cfg.is_static,
            operators=list(cfg.operators.operators_to_quantize),
            nodes_to_exclude=exclusion.node_names,
            per_channel=cfg.per_channel,
            instruction_set=cfg.quantization.instruction_set,
            reduce_range=cfg.quantization.reduce_range,
        )
        qconfig, isa, detected = build_quantization_config(request)
    limit = getattr(inputs.tokenizer, "model_max_length", exported.max_length) or exported.max_length
    return Plan(exclusion, request, qconfig, isa, detected, min(exported.max_length, limit))
