"""The SageMaker launcher's job payload and return record: data that another Python reads.

The cross-version tests write a payload with this Python (3.11) and read it, resolve its
task and run a job from it with another minor version of pyenv (3.13, the default image's, when the
tests run on 3.11), in a venv holding only what the reader
declares: the quantsweep wheel without its dependencies, hydra-core and omegaconf.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from omegaconf import open_dict

from hydra_plugins.quantsweep_sagemaker import _payload

REPO = Path(__file__).resolve().parents[2]


def _other_python() -> Path | None:
    """A pyenv Python of another minor version that quantsweep supports (>= 3.10), newest first."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}."
    versions = sorted((Path.home() / ".pyenv" / "versions").glob("3.1[0-9].*"), reverse=True)
    return next((v / "bin" / "python" for v in versions if not v.name.startswith(here)), None)


OTHER_PYTHON = _other_python()
OTHER_MINOR = ".".join(OTHER_PYTHON.parent.parent.name.split(".")[:2]) if OTHER_PYTHON else ""


def composed(overrides: list[str]) -> Any:
    """quantsweep's job config as the launcher has it: composed, hydra node included."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("quantsweep.conf", version_base="1.3"):
        config = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(config):
        config.hydra.job.id = "quantsweep_0"
        config.hydra.job.num = 0
        config.hydra.overrides.task = overrides
    return config


# ---- another Python ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another minor Python with the quantsweep wheel (no dependencies), hydra-core and omegaconf: no torch.

    Not skipped when none is installed: every machine this project runs on has pyenv's 3.10
    to 3.13, and a silent skip would hide the one check that the payload crosses versions.
    """
    assert OTHER_PYTHON is not None and OTHER_PYTHON.is_file(), "no pyenv Python of another minor version"
    from hydra_plugins.quantsweep_sagemaker._bundle import build_bundle

    folder = tmp_path_factory.mktemp("other-python")
    bundle = build_bundle(folder / "bundle", REPO, None)
    venv = folder / "venv"
    subprocess.run([str(OTHER_PYTHON), "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(bundle.wheel)], check=True, env=env)
    subprocess.run([*pip, "hydra-core>=1.3.2,<1.4", "omegaconf>=2.3,<2.4"], check=True, env=env)
    return python


def _run(python: Path, code: str, **kwargs: Any) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    result = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, **kwargs
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_payload_written_here_is_read_and_its_task_resolved_by_another_python(tmp_path, other_python):
    import quantsweep.cli

    config = composed(["quantization=static"])
    task = _payload.task_reference(quantsweep.cli.run.__wrapped__)
    path = tmp_path / "job.json"
    path.write_text(_payload.dumps(_payload.job_payload(config, task, {}, {})))
    json.loads(path.read_text(encoding="utf-8"))  # JSON text: nothing else to load
    out = _run(
        other_python,
        f"""
        import json, sys
        from pathlib import Path
        from hydra_plugins.quantsweep_sagemaker import _payload
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"hydra", "omegaconf", "torch", "numpy"}})
        payload = _payload.read_payload(Path({str(path)!r}))
        _payload.set_hydra_state(payload)
        task = _payload.load_task(payload["task"], Path({str(tmp_path / "code")!r}))
        config = _payload.rebuild_config(payload)
        print(json.dumps({{
            "python": list(sys.version_info[:2]),
            "heavy_after_import": heavy,
            "task": [task.__module__, task.__qualname__, hasattr(task, "__wrapped__")],
            "torch": "torch" in sys.modules,
            "subdir": str(config.hydra.sweep.subdir),
            "quantization": config.quantization.kind if "kind" in config.quantization else None,
        }}))
        """,
    )
    seen = json.loads(out.splitlines()[-1])
    assert seen["python"] == [int(p) for p in OTHER_MINOR.split(".")] and sys.version_info[:2] != tuple(
        seen["python"]
    )
    assert seen["heavy_after_import"] == []  # the reader module imports nothing heavy
    # quantsweep.cli:run, undecorated: the function Hydra's run_job calls
    assert seen["task"] == ["quantsweep.cli", "run", False]
    assert seen["torch"] is False
    # qs_job_name, registered by importing the task's module in the other Python, named the job's folder
    assert seen["subdir"] == str(config.hydra.sweep.subdir) == "static-add_matmul-none"


def test_a_job_runs_from_a_payload_in_another_python_and_comes_back_as_data(tmp_path, other_python):
    """The container's entry in the other Python, on a script's task that travels as source text."""
    script = tmp_path / "app" / "my_app.py"
    script.parent.mkdir()
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import hydra

            @hydra.main(version_base="1.3", config_path=".", config_name="config")
            def my_app(cfg):
                return {"python": f"{sys.version_info[0]}.{sys.version_info[1]}", "a": cfg.a}

            if __name__ == "__main__":
                raise SystemExit("the container must not run the script's main block")
            """
        )
    )
    (script.parent / "config.yaml").write_text("a: 1\n")
    spec = importlib.util.spec_from_file_location("my_app", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_app"] = module  # imported as a module no installed package provides
    try:
        spec.loader.exec_module(module)
        task = _payload.task_reference(module.my_app.__wrapped__)
    finally:
        del sys.modules["my_app"]
    assert task["source"]["filename"] == "my_app.py"

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(script.parent), version_base="1.3", job_name="my_app"):
        config = compose("config", overrides=["a=2"], return_hydra_config=True)
    with open_dict(config):
        config.hydra.job.id, config.hydra.job.num = "my_app_0", 0
        config.hydra.overrides.task = ["a=2"]
        config.hydra.sweep.dir = str(tmp_path / "sweep")
        config.hydra.runtime.cwd = str(tmp_path)
    root = tmp_path / "opt" / "ml"
    (root / "input" / "data" / "job").mkdir(parents=True)
    payload = _payload.job_payload(config, task, {}, {})
    (root / "input" / "data" / "job" / _payload.PAYLOAD).write_text(_payload.dumps(payload))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    result = subprocess.run(
        [str(other_python), "-m", "hydra_plugins.quantsweep_sagemaker._container"],
        env={**env, "QUANTSWEEP_OPT_ML": str(root)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = _payload.read_return((root / "model" / _payload.RETURN).read_text())
    assert record.status == "COMPLETED"
    assert record.value == {"python": OTHER_MINOR, "a": 2}
    assert record.relative_dir == "0"
    assert (root / "model" / "job" / ".hydra" / "overrides.yaml").is_file()
    assert not list(root.rglob("*.pkl"))


# ---- the container's install and the image's Python --------------------------------------


def test_the_container_install_for_the_default_image_names_no_torch_pin_and_no_cuda(tmp_path) -> None:
    import re

    from hydra_plugins.quantsweep_sagemaker import _bundle
    from hydra_plugins.quantsweep_sagemaker._core import COMMAND, default_image

    image = default_image("us-east-1", "ml.c7i.2xlarge")
    assert "pytorch-training" in image and "-cpu-py3" in image
    bundle = _bundle.build_bundle(tmp_path / "bundle", REPO, None)
    # the project's constraints pin torch for installs on this side; the container's do not
    assert re.search(r"^torch==", (bundle.folder / "constraints.txt").read_text(), re.MULTILINE)
    installs = "\n".join(
        [
            COMMAND,
            (bundle.folder / _bundle.INSTALL_SCRIPT).read_text(),
            (bundle.folder / _bundle.CONTAINER_CONSTRAINTS).read_text(),
            (bundle.folder / _bundle.REQUIREMENTS).read_text(),
            _bundle.install_summary((bundle.folder / _bundle.CONTAINER_CONSTRAINTS).read_text()),
        ]
    )
    print(installs)
    assert not re.search(r"torch\s*(==|~=|<|@)", installs)  # no pin: the image's torch is kept
    assert not re.search(r"nvidia|cuda|triton|--extra-index-url|download\.pytorch", installs, re.I)
    assert "bash install.sh" in COMMAND and "-c container-constraints.txt" in installs
    assert _bundle.container_constraints(
        "torch==2.13.0\nnvidia-cublas-cu12==12.1\nTriton>=3\nx<2\n"
    ).endswith("\nx<2\n")


def test_the_container_gets_the_mlflow_plugin_only_when_it_logs_to_a_sagemaker_arn(tmp_path) -> None:
    from hydra_plugins.quantsweep_sagemaker import _bundle
    from hydra_plugins.quantsweep_sagemaker._core import _extras
    from hydra_plugins.quantsweep_sagemaker.config import SageMakerLauncherConf

    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    logging_here = SageMakerLauncherConf(mlflow_from_container=True)
    assert _extras(logging_here, arn) == ["sagemaker-mlflow"]
    assert _extras(logging_here, "https://mlflow.example.com") == []  # plain MLflow speaks http
    assert _extras(SageMakerLauncherConf(), arn) == []  # the default: logged at home only
    bundle = _bundle.build_bundle(tmp_path / "bundle", REPO, None, _extras(logging_here, arn))
    requirements = (bundle.folder / _bundle.REQUIREMENTS).read_text().split()
    assert requirements == [f"./{bundle.wheel.name}", "sagemaker-mlflow"]
    assert f"-r {_bundle.REQUIREMENTS}" in (bundle.folder / _bundle.INSTALL_SCRIPT).read_text()
