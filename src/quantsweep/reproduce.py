"""`quantsweep-reproduce TARGET`: run a saved job's exact config again and compare.

TARGET is a job folder or an MLflow run id (its saved `.hydra/config.yaml` and
`results.json` artifacts are downloaded). The new run goes to a fresh folder; the table
shows saved and new metrics side by side. Evaluation metrics must agree exactly (the exit
code says whether they do). Speed-ups are compared only at shapes both runs timed, and
agree when their per-window ranges overlap: a speed-up is a noisy measurement, and the
window spread is its noise.

**What it pins.** Whatever the saved run resolved on its own machine and would resolve
differently here: the Hub commit, the nodes an exclusion search chose, and the
quantization preset. `quantization.instruction_set=auto` picks the integer types from the
CPU (optimum's AVX2 preset quantizes weights to uint8, the AVX-512 ones to int8), so a
fresh detection on another machine would quantize another model and the comparison
would flag a difference nobody made. Where the CPU differs, the table says so and names
both machines' int8 instruction sets: the speed-ups then compare two machines.

**What it trusts.** The saved config is data, never a Hydra config. Hydra acts on parts
of a primary config: a `hydra:` section (callbacks and launchers it instantiates), a
`defaults:` list (files it composes in), `_target_` (a callable to instantiate) and
interpolations (resolvers that run here; `${oc.env:...}` copies an environment variable
into the config the new run records and logs). A run on a tracking server holds whatever
anyone with write access uploaded, and a job folder can be copied and edited, so the file
is read as plain YAML, refused in one paragraph if it holds any of these, validated
against :class:`RunConfig` with the pins applied, and the validated config is written to
a scratch folder that the new run starts from. All of this happens before any subprocess
and before any heavy import (MLflow only to download a run's two files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantsweep.files import RESULTS_FILE
from quantsweep.records import window_spread
from quantsweep.tasks import of_results

if TYPE_CHECKING:
    from quantsweep.config import RunConfig

SAVED_CONFIG = Path(".hydra") / "config.yaml"
# A saved config is a few hundred values; a YAML alias bomb expands to billions. Past this
# many nodes the file is refused before anything walks or copies it further.
_MAX_NODES = 20_000
# Why the refused parts are refused, and what to do instead: the end of every such paragraph.
_WHY_REFUSED = (
    "Hydra acts on such parts rather than reading them: a `hydra:` section's callbacks and launchers are Python "
    "objects it instantiates, a `defaults:` list composes other configs in, a `_target_` names a callable to "
    "instantiate, and an interpolation `${...}` runs a resolver here (`${oc.env:NAME}` copies an environment "
    "variable, a credential among them, into the config the new run records and logs). A run on a tracking "
    "server holds whatever anyone with write access uploaded, and a job folder can be copied and edited, so "
    "quantsweep-reproduce loads a job's keys and values only; nothing was run. A config quantsweep saved has "
    "none of these (an interpolation only if you typed one: write its value into a copy of the folder); to "
    "rerun such a job anyway, give its settings to `quantsweep` as overrides."
)


class ReproduceError(Exception):
    """A saved job that is not reproduced as it stands; the message is one paragraph for the user."""


def saved_files(target: str, tracking_uri: str | None, scratch: Path) -> tuple[Path, Path]:
    """(saved config.yaml, saved results.json) of a job folder, or of an MLflow run downloaded to scratch."""
    folder = Path(target)
    if (folder / SAVED_CONFIG).is_file():
        return folder / SAVED_CONFIG, folder / RESULTS_FILE
    if folder.is_dir():
        raise ReproduceError(
            f"quantsweep-reproduce: {folder} is a folder without {SAVED_CONFIG.as_posix()}, so it is not a job "
            "folder quantsweep wrote; name a job folder (one that holds results.json and .hydra/), or an "
            "MLflow run id with --tracking-uri."
        )
    # two small files: a progress bar per file would only bury what reproduce says
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    from quantsweep.redaction import redact_uri
    from quantsweep.tracking import DEFAULT_TRACKING_URI

    uri = tracking_uri or DEFAULT_TRACKING_URI
    downloaded = []
    # only the two files the reproduction reads: nothing else a run holds lands on this machine
    for name in (SAVED_CONFIG.as_posix(), RESULTS_FILE):
        try:
            downloaded.append(
                Path(
                    mlflow.artifacts.download_artifacts(
                        run_id=target,
                        artifact_path=f"job/{name}",
                        dst_path=str(scratch / "download"),
                        tracking_uri=uri,
                    )
                )
            )
        except Exception as error:  # an unknown run id, a run without job files, a server down
            reason = " ".join(redact_uri(str(error)).split())[:300]
            raise ReproduceError(
                f"quantsweep-reproduce: {target} is neither a job folder nor an MLflow run whose job/{name} "
                f"could be downloaded from {redact_uri(uri)} ({type(error).__name__}: {reason}); name a job folder, "
                "or a run id quantsweep logged, with --tracking-uri for the server that holds it."
            ) from None
    return downloaded[0], downloaded[1]


def load_job_config(path: Path, source: str) -> dict[str, Any]:
    """The saved config as plain keys and values; ReproduceError if Hydra would act on any part of it."""
    import yaml

    try:
        # plain YAML (safe_load builds no objects), not OmegaConf or Hydra, which would act on it
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ReproduceError(
            f"quantsweep-reproduce refuses {source}: it cannot be read as a YAML mapping ({reason}); a job's "
            "saved config is the YAML mapping of quantsweep's keys that Hydra wrote to .hydra/config.yaml."
        ) from None
    if not isinstance(tree, dict):
        raise ReproduceError(
            f"quantsweep-reproduce refuses {source}: it holds a {type(tree).__name__} ({_short(tree)}), not a "
            "mapping of quantsweep's keys to their values, which is what Hydra saves as a job's config."
        )
    found = _hydra_directive(tree)
    if found is not None:
        raise ReproduceError(f"quantsweep-reproduce refuses {source}: it has {found}. {_WHY_REFUSED}")
    return tree


def _hydra_directive(tree: dict[Any, Any]) -> str | None:
    """What in a saved config Hydra or OmegaConf would act on, described for the user; None if nothing."""
    if "hydra" in tree:
        section = tree["hydra"]
        keys = ", ".join(map(str, section)) if isinstance(section, dict) and section else _short(section)
        return f"a `hydra:` section ({keys})"
    if "defaults" in tree:
        return f"a `defaults:` list ({_short(tree['defaults'])})"
    for count, (key, value) in enumerate(_nodes(tree), start=1):
        if count > _MAX_NODES:
            return f"more than {_MAX_NODES} values (a YAML alias expands a few lines into this many)"
        if key.rsplit(".", 1)[-1] == "_target_":
            return f"a `_target_`: `{key}` is {_short(value)}"
        if isinstance(value, str) and "${" in value:
            return f"an interpolation: `{key}` is {_short(value)}"
    return None


def _nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) of a parsed YAML tree, lists indexed, inner nodes included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        dotted = f"{prefix}{key}"
        yield dotted, value
        yield from _nodes(value, f"{dotted}.")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_results(path: Path, source: str) -> dict[str, Any]:
    """The saved results.json, refused in one paragraph unless it holds a finished job's results."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ReproduceError(
            f"quantsweep-reproduce: {source} cannot be read as JSON ({type(error).__name__}: {error}); it should "
            "be the results.json a finished job wrote beside its .hydra/ folder."
        ) from None
    record = saved if isinstance(saved, dict) else {}
    missing = [key for key in ("original", "quantized", "timing") if key not in record]
    if missing:
        raise ReproduceError(
            f"quantsweep-reproduce: {source} has no `{missing[0]}` results, so there is nothing to compare a new "
            "run with; name a job folder (or MLflow run) whose job finished."
        )
    return saved


def pin_saved_run(
    config: dict[str, Any],
    saved: dict[str, Any],
    overrides: list[str],
    search: bool,
    server: tuple[str | None] | None = None,
) -> list[str]:
    """Write into the saved config what its run resolved on its own machine; returns what to tell the user.

    The pins are values in the config, not command-line overrides built from the files:
    a node name or a revision from a downloaded results.json never passes through Hydra's
    override grammar (which reads `${...}` in a value as an interpolation). The user's own
    overrides still follow on the command line, so they win over every pin. ``server``
    holds the tracking URI a run was downloaded from (None inside: the embedded store).
    """
    told = []
    revision = _read(saved, "export").get("model_revision")
    if revision and not config.get("revision"):
        if not isinstance(revision, str):
            raise _bad_results("export.model_revision", revision, "the Hub commit the model resolved to")
        config["revision"] = revision  # the Hub commit the saved run resolved to
    found = saved.get("exclusion_search")
    exclusion = _pinnable(config, "exclusion") if found and not search else None
    if exclusion is not None:
        chosen = found.get("chosen") if isinstance(found, dict) else None
        if not isinstance(chosen, list) or not all(isinstance(n, str) and n.strip() for n in chosen):
            raise _bad_results("exclusion_search.chosen", chosen, "the node names the search kept in fp32")
        # the nodes the saved search chose, as a fixed list: the same graph, without searching
        exclusion.update(auto=False, nodes=list(chosen))
        told.append(
            f"Reproducing with the {len(chosen)} nodes the saved exclusion search chose (--search searches again)."
        )
    told += _pin_preset(config, saved, {o.split("=", 1)[0].lstrip("+~") for o in overrides})
    mlflow = _pinnable(config, "mlflow") if server is not None else None
    if server is not None and mlflow is not None:
        # a downloaded config must not choose the server that this machine's MLflow
        # credentials (MLFLOW_TRACKING_*) are sent to: the new run logs where the saved one was found
        mlflow["tracking_uri"] = server[0]
    return told


def _pin_preset(config: dict[str, Any], saved: dict[str, Any], given: set[str]) -> list[str]:
    """Pin the quantization preset a saved `auto` run detected; returns what to tell the user."""
    quantization = _pinnable(config, "quantization")
    if quantization is None or quantization.get("instruction_set", "auto") != "auto":
        return []  # a preset the config names is the same on every machine
    from quantsweep.config import INSTRUCTION_SETS
    from quantsweep.environment import detect_instruction_set

    here = detect_instruction_set()
    facts = _read(saved, "quantization")
    preset = facts.get("instruction_set")
    if "quantization.instruction_set" in given:
        return [
            f"The saved run quantized with the preset {preset or '(not recorded)'}; your override of "
            "quantization.instruction_set decides this run's."
        ]
    if preset is None:  # a results.json from before quantization facts were recorded
        return [
            "The saved results.json does not record which preset quantization.instruction_set=auto chose, so "
            f"it is detected again on this CPU ({here}); if the saved run's CPU chose another, the quantized "
            "models differ (name the preset with quantization.instruction_set=... to choose it)."
        ]
    presets = [name for name in INSTRUCTION_SETS if name != "auto"]
    if preset not in presets:
        raise _bad_results("quantization.instruction_set", preset, f"a preset: {', '.join(presets)}")
    quantization["instruction_set"] = preset
    here_too = "this CPU would choose it too" if preset == here else f"this CPU would choose {here}"
    return [
        f"Quantizing with the saved run's preset {preset} ({_types(facts)}): its quantization.instruction_set=auto "
        f"chose it on {_machine(saved.get('environment'))}, and {here_too} (quantization.instruction_set=auto "
        "on the command line detects it here instead)."
    ]


def _read(tree: dict[str, Any], key: str) -> dict[str, Any]:
    """``tree[key]`` as a mapping to read (empty if it is absent or no mapping)."""
    node = tree.get(key)
    return node if isinstance(node, dict) else {}


def _pinnable(config: dict[str, Any], key: str) -> dict[str, Any] | None:
    """``config[key]``, created if absent, to pin into; None if it is no mapping (RunConfig refuses it)."""
    node = config.setdefault(key, {})
    return node if isinstance(node, dict) else None


def _bad_results(key: str, value: Any, allowed: str) -> ReproduceError:
    return ReproduceError(
        f"quantsweep-reproduce: the saved results.json's `{key}` is {_short(value)}; it should be {allowed}, so "
        "this file is not as a quantsweep job wrote it, and nothing is pinned from it or run. Reproduce from a "
        "job folder (or MLflow run) whose results.json is quantsweep's own."
    )


def _types(facts: dict[str, Any]) -> str:
    """A preset's integer types as a run's quantization facts record them (QInt8 weights are int8)."""
    names = {"QInt8": "int8", "QUInt8": "uint8"}
    kinds = [
        f"{side} {names.get(str(dtype), dtype)}"
        for side in ("weights", "activations")
        if (dtype := facts.get(f"{side}_dtype"))
    ]
    return ", ".join(kinds) or "integer types not recorded"


def _machine(environment: Any) -> str:
    """A run's CPU and its int8 instruction sets (environment.py's names), as its results.json records them."""
    from quantsweep.environment import int8_instruction_sets

    env = environment if isinstance(environment, dict) else {}
    sets = env.get("int8_instruction_sets")
    if not isinstance(sets, list) or not sets:
        # a results.json from before the sets were recorded: derived from the CPU flags it kept
        flags = env.get("cpu_flags")
        sets = int8_instruction_sets(frozenset(map(str, flags))) if isinstance(flags, list) else None
    named = (
        ", ".join(map(str, sets))
        if sets
        else "none of the int8 instruction sets quantsweep tracks"
        if sets == []
        else "instruction sets not recorded"
    )
    return f"{env.get('cpu_model') or 'an unrecorded CPU'} ({named})"


def comparison(saved: dict[str, Any], new: dict[str, Any]) -> tuple[str, bool]:
    """The side-by-side table, and whether the evaluation metrics are identical."""
    lines = [f"{'':<34}{'saved':>12}{'new':>12}  kind", "-" * 78]
    identical = True
    for side in ("original", "quantized"):
        for metric in of_results(saved).METRICS:
            a, b = saved[side][metric], new[side][metric]
            identical &= a == b
            lines.append(
                f"{f'{side} {metric}':<34}{a:>12.6f}{b:>12.6f}  evaluation: must be identical{'' if a == b else '  <-- DIFFERS'}"
            )
    lines += _timing_rows(saved["timing"]["shapes"], new["timing"]["shapes"])
    lines += _machine_notes(saved, new)
    cached = new.get("cache", {}).get("original_evaluation", {})
    if cached.get("hit"):
        lines += [
            "",
            f"The new run's original (fp32) metrics came from the cache (entry {str(cached.get('key'))[:12]}), "
            "computed by an earlier job with the same export, rows and evaluation code; --no-cache recomputes them.",
        ]
    return "\n".join(lines), identical


def _machine_notes(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why the two runs may not match: another quantization preset, another CPU (each said only if so)."""
    notes = []
    old, fresh = _read(saved, "quantization"), _read(new, "quantization")
    same_preset = old.get("instruction_set") == fresh.get("instruction_set") and _types(old) == _types(fresh)
    if not same_preset and old.get("instruction_set") and fresh.get("instruction_set"):
        notes += [
            "",
            f"Another quantization preset: the saved run used {old['instruction_set']} ({_types(old)}), the new "
            f"run {fresh['instruction_set']} ({_types(fresh)}). They quantize to other integer types, so the "
            "quantized models differ and so may their evaluation metrics.",
        ]
    machines = _machine(saved.get("environment")), _machine(new.get("environment"))
    if machines[0] != machines[1]:
        same = (
            f" Both quantized with the preset {old['instruction_set']} ({_types(old)}), so the quantized models "
            "are the same and their evaluation metrics must be too."
            if same_preset and old.get("instruction_set")
            else ""
        )
        notes += [
            "",
            f"Another CPU: the saved run ran on {machines[0]}, the new run on {machines[1]}.{same} The speed-ups "
            "were measured on different machines: whether they agree says little about either.",
        ]
    return notes


def _timing_rows(saved: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """Speed-ups at the shapes both runs timed; a shape only one of them timed is named, not compared."""
    by_shape = [{(s["batch_size"], s["input_length"]): s for s in shapes} for shapes in (saved, new)]
    rows = []
    for shape in sorted(by_shape[0].keys() | by_shape[1].keys()):
        label = f"speed-up {shape[0]}x{shape[1]}"
        old, fresh = (side.get(shape) for side in by_shape)
        if old is None or fresh is None:
            which = "the new run" if old is None else "the saved run"
            value = (fresh or old or {})["speedup"]
            cells = f"{'':>12}{value:>12.3f}" if old is None else f"{value:>12.3f}{'':>12}"
            rows.append(f"{label:<34}{cells}  timing: only {which} timed this shape, not compared")
            continue
        low_a, _, high_a = window_spread(old["window_speedups"])
        low_b, _, high_b = window_spread(fresh["window_speedups"])
        ranges = f"per window {low_a:.2f}-{high_a:.2f} vs {low_b:.2f}-{high_b:.2f}"
        verdict = "agrees" if low_a <= high_b and low_b <= high_a else "differs"
        overlap = "overlap" if verdict == "agrees" else "do not overlap"
        rows.append(
            f"{label:<34}{old['speedup']:>12.3f}{fresh['speedup']:>12.3f}  timing: {verdict} ({ranges} {overlap})"
        )
    return rows


def prepare(args: argparse.Namespace, scratch: Path) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """(folder of the validated, pinned config the new run starts from, saved results, saved choices).

    Everything here reads the saved files as data; ReproduceError before anything runs.
    """
    config_file, results_file = saved_files(args.target, args.tracking_uri, scratch)
    local = (Path(args.target) / SAVED_CONFIG).is_file()
    source = str(config_file) if local else f"the {SAVED_CONFIG.as_posix()} of MLflow run {args.target}"
    results_source = str(results_file) if local else f"the {RESULTS_FILE} of MLflow run {args.target}"
    config = load_job_config(config_file, source)
    saved = load_results(results_file, results_source)
    choices = saved.get("choices") or {}
    if not isinstance(choices, dict) or not all(isinstance(v, str) for v in [*choices, *choices.values()]):
        raise _bad_results("choices", choices, "the job's group choices, e.g. {quantization: static}")
    told = pin_saved_run(config, saved, args.overrides, args.search, None if local else (args.tracking_uri,))
    pinned = _hydra_directive(config)
    if pinned is not None:  # a node name or revision from results.json that OmegaConf would resolve
        raise ReproduceError(
            f"quantsweep-reproduce refuses {results_source}: a value it pins into the config is {pinned}. "
            f"{_WHY_REFUSED}"
        )
    run_config = _validated(config, source)
    from omegaconf import OmegaConf

    # the new run's primary config: only the validated keys and values, in a folder of its own
    config_dir = scratch / "config"
    config_dir.mkdir()
    text = OmegaConf.to_yaml(OmegaConf.structured(run_config))
    (config_dir / "config.yaml").write_text(text, encoding="utf-8")
    for line in told:
        print(line)
    return config_dir, saved, choices


def _validated(config: dict[str, Any], source: str) -> RunConfig:
    """The saved config with its pins as a RunConfig, checked as `quantsweep` checks a composed one."""
    from omegaconf import OmegaConf

    from quantsweep.cli import to_run_config
    from quantsweep.config import ConfigError

    try:
        return to_run_config(OmegaConf.create(config))
    except Exception as error:  # ConfigError, or OmegaConf's own for a key it cannot hold
        message = str(error) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
        raise ReproduceError(
            f"quantsweep-reproduce refuses {source}: it is not a quantsweep job config as this version checks "
            f"one (with the saved run's pins applied). {' '.join(message.split())}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quantsweep-reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a job folder, or an MLflow run id")
    parser.add_argument("--tracking-uri", help="where to find an MLflow run id (default: the embedded store)")
    parser.add_argument("--out", type=Path, help="the new job folder (default: outputs/reproduced/<time>)")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="compute everything again (export, fp32 evaluation, calibration) instead of reading the cache",
    )
    parser.add_argument(
        "--search",
        action="store_true",
        help="with exclusion=auto: search again instead of reusing the chosen nodes",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. benchmark.duration=5")
    args = parser.parse_intermixed_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantsweep-reproduce-") as scratch:
        try:
            config_dir, saved, choices = prepare(args, Path(scratch))
        except ReproduceError as error:
            print(error, file=sys.stderr)
            return 2
        out = args.out or Path("outputs/reproduced") / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        command = [
            sys.executable,
            "-m",
            "quantsweep.cli",
            "--config-path",
            str(config_dir.resolve()),
            "--config-name",
            "config",
            f"hydra.run.dir={out}",
            "hydra.job.name=quantsweep",
            *(["cache=false"] if args.no_cache else []),
            *args.overrides,
        ]
        from quantsweep.cli import REPRODUCES_VARIABLE

        origin = {"choices": choices, "source": args.target}
        completed = subprocess.run(
            command, check=False, env={**os.environ, REPRODUCES_VARIABLE: json.dumps(origin)}
        )
        if completed.returncode != 0:
            return completed.returncode
        new = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    table, identical = comparison(saved, new)
    print(table)
    print(f"\nNew run: {out}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
