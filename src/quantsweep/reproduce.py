"""`quantsweep-reproduce TARGET`: run a saved job's exact config again and compare.

TARGET is a job folder or an MLflow run id (its saved `.hydra/config.yaml` artifact is
used). The new run goes to a fresh folder; the table shows saved and new metrics side
by side. Evaluation metrics must agree exactly (the exit code says whether they do).
Speed-ups are compared only at shapes both runs timed, and agree when their per-window
ranges overlap: a speed-up is a noisy measurement, and the window spread is its noise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from quantsweep.results import RESULTS_FILE, window_spread
from quantsweep.tasks import of_results

# Set for the reproducing job: the saved job's group choices and where it came from, so the
# new run is named after the job it reproduces (its primary config is a saved file, not groups).
REPRODUCES_VARIABLE = "QUANTSWEEP_REPRODUCES"


def saved_files(target: str, tracking_uri: str | None, scratch: Path) -> tuple[Path, Path]:
    """(folder of the saved config.yaml, saved results.json) of a job folder or an MLflow run."""
    folder = Path(target)
    if (folder / ".hydra" / "config.yaml").is_file():
        return folder / ".hydra", folder / RESULTS_FILE
    import mlflow

    from quantsweep.tracking import DEFAULT_TRACKING_URI

    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=target,
            artifact_path="job",
            dst_path=str(scratch),
            tracking_uri=tracking_uri or DEFAULT_TRACKING_URI,
        )
    )
    return local / ".hydra", local / RESULTS_FILE


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
    cached = new.get("cache", {}).get("original_evaluation", {})
    if cached.get("hit"):
        lines += [
            "",
            f"The new run's original (fp32) metrics came from the cache (entry {str(cached.get('key'))[:12]}), "
            "computed by an earlier job with the same export, rows and evaluation code; --no-cache recomputes them.",
        ]
    return "\n".join(lines), identical


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
        config_dir, saved_results = saved_files(args.target, args.tracking_uri, Path(scratch))
        saved = json.loads(saved_results.read_text(encoding="utf-8"))
        pinned = []
        revision = saved.get("export", {}).get("model_revision")
        if revision and not saved["config"].get("revision"):
            pinned.append(f"revision={revision}")  # the Hub commit the saved run resolved to
        found = saved.get("exclusion_search")
        if found and not args.search:
            # the nodes the saved search chose, as a fixed list: the same graph, without searching
            pinned += ["exclusion.auto=false", f"exclusion.nodes=[{','.join(found['chosen'])}]"]
            print(
                f"Reproducing with the {len(found['chosen'])} nodes the saved exclusion search chose (--search searches again)."
            )
        if args.no_cache:
            pinned.append("cache=false")
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
            *pinned,
            *args.overrides,
        ]
        origin = {"choices": saved.get("choices") or {}, "source": args.target}
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
