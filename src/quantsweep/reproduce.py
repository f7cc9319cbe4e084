"""`quantsweep-reproduce TARGET`: run a saved job's exact config again and compare.

TARGET is a job folder or an MLflow run id (its saved `.hydra/config.yaml` artifact is
used). The new run goes to a fresh folder; the table shows saved and new metrics side
by side. Evaluation metrics must agree exactly; timings agree only within noise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from quantsweep.results import RESULTS_FILE

METRICS = ("precision", "recall", "f1", "accuracy")


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
    lines = [f"{'':<34}{'saved':>12}{'new':>12}  kind", "-" * 70]
    identical = True
    for side in ("original", "quantized"):
        for metric in METRICS:
            a, b = saved[side][metric], new[side][metric]
            identical &= a == b
            lines.append(
                f"{f'{side} {metric}':<34}{a:>12.6f}{b:>12.6f}  evaluation: must be identical{'' if a == b else '  <-- DIFFERS'}"
            )
    for old, fresh in zip(saved["timing"]["shapes"], new["timing"]["shapes"], strict=False):
        label = f"speed-up {old['batch_size']}x{old['input_length']}"
        lines.append(
            f"{label:<34}{old['speedup']:>12.3f}{fresh['speedup']:>12.3f}  timing: agrees within noise"
        )
    return "\n".join(lines), identical


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quantsweep-reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a job folder, or an MLflow run id")
    parser.add_argument("--tracking-uri", help="where to find an MLflow run id (default: the embedded store)")
    parser.add_argument("--out", type=Path, help="the new job folder (default: outputs/reproduced/<time>)")
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
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            return completed.returncode
        new = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    table, identical = comparison(saved, new)
    print(table)
    print(f"\nNew run: {out}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
