"""The SageMaker launcher against moto on 127.0.0.1, with the harness playing the container."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sagemaker_suite_tasks
import yaml
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.test_utils.test_utils import SweepTaskFunction
from sagemaker_harness import ContainerImage, FakeSageMaker
from test_mlflow_server import rest, runs_of

from quantsweep.testing import run_module

REPO = Path(__file__).resolve().parents[2]
FAST = [
    "benchmark.duration=0.04",
    "benchmark.batch_sizes=[1]",
    "benchmark.input_lengths=[8]",
    "benchmark.warmup=1",
    "benchmark.windows=2",
    "benchmark.threads=1",
    "calibration.num_calibration_samples=8",
]


# A fixed folder: Hydra's integration suite asks where remote jobs run before any fixture exists.
HARNESS_DIR = Path(tempfile.gettempdir()) / f"quantsweep-sagemaker-harness-{os.getpid()}"
SUITE_BUCKET = "hydra-suites"


@pytest.fixture(scope="session")
def container_image(tmp_path_factory: pytest.TempPathFactory) -> ContainerImage:
    """The stand-in training image (a venv with pip and CPU torch), built once for all xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    image = ContainerImage(root / "sagemaker-container").build()
    if image.seconds:
        print(f"\nThe harness's container image took {image.seconds:.0f} s to build.", file=sys.stderr)
    return image


@pytest.fixture(scope="module")
def sagemaker(container_image: ContainerImage) -> Iterator[FakeSageMaker]:
    HARNESS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        with FakeSageMaker(HARNESS_DIR, container_image) as fake, pytest.MonkeyPatch.context() as patch:
            # in-process launches (Hydra's launcher suite) and the suite's subprocesses see moto
            for name, value in fake.environment().items():
                patch.setenv(name, value)
            fake.create_bucket(SUITE_BUCKET)
            fake.suite_role = fake.create_role_named("hydra-suites")
            yield fake
    finally:
        shutil.rmtree(HARNESS_DIR, ignore_errors=True)


def launcher_args(fake: FakeSageMaker, bucket: str, role: str) -> list[str]:
    return [
        "hydra/launcher=sagemaker",
        f"hydra.launcher.role={role}",
        f"hydra.launcher.s3_prefix=s3://{bucket}/quantsweep",
        "hydra.launcher.poll_seconds=0.5",
        "hydra.launcher.instance_type=ml.c5.xlarge",
        f"hydra.launcher.project_dir={REPO}",
    ]


def assert_isolated(fake: FakeSageMaker, names: list[str]) -> None:
    """The jobs' Python saw the image and their own installs, nothing of the test environment."""
    for name in names:
        python = fake.environments[name] / "bin" / "python"
        path = subprocess.run(
            [str(python), "-c", "import sys; print(sys.path)"], capture_output=True, text=True, check=True
        ).stdout
        assert sys.prefix not in path and str(REPO) not in path, path
        assert str(fake.image.venv) in path
        hf = {k for k in fake.variables[name] if k.startswith("HF_")}
        assert hf == {"HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"}, hf


def _tag(run: dict[str, Any], key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


def objects(fake: FakeSageMaker, bucket: str) -> list[str]:
    listing = fake.client("s3").list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_the_launcher_is_a_discoverable_hydra_plugin() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert "hydra_plugins.quantsweep_sagemaker.launcher.SageMakerLauncher" in found


def test_bad_settings_fail_before_anything_is_uploaded(tmp_path, sagemaker, distilbert_dir, conll_dir):
    bucket = sagemaker.create_bucket("bad-settings")
    role = sagemaker.create_role_named("bad-settings")
    base = ["--multirun", f"model_name_or_path={distilbert_dir}", f"dataset.path={conll_dir}"]
    before = len(sagemaker.client("sagemaker").list_training_jobs()["TrainingJobSummaries"])
    cases = [
        (["hydra.launcher.role=null"], "`hydra.launcher.role` is None"),
        (["hydra.launcher.instance_type=c5.xlarge"], "`hydra.launcher.instance_type` is 'c5.xlarge'"),
        (["hydra.launcher.region=null"], "`hydra.launcher.region`"),
        # the container cannot reach the embedded store: every job is logged at home instead
        (["hydra.launcher.mlflow_from_container=true"], "`hydra.launcher.mlflow_from_container` is True"),
        (["hydra.launcher.bucket_owner=someone"], "`hydra.launcher.bucket_owner` is 'someone'"),
        # a custom image must say its Python, which is checked before anything is uploaded
        (
            ["hydra.launcher.image_uri=123456789012.dkr.ecr.us-east-1.amazonaws.com/quantsweep:1"],
            "`hydra.launcher.image_python` is None",
        ),
    ]
    for overrides, expected in cases:
        env = sagemaker.environment()
        if overrides == ["hydra.launcher.region=null"]:
            env = {**env, "AWS_DEFAULT_REGION": "", "AWS_REGION": ""}
        keys = {o.split("=", 1)[0] for o in overrides}
        defaults = [a for a in launcher_args(sagemaker, bucket, role) if a.split("=", 1)[0] not in keys]
        result = run_module(
            "quantsweep.cli",
            *base,
            *defaults,
            *overrides,
            cwd=tmp_path,
            check=False,
            env=env,
        )
        assert result.returncode != 0, overrides
        assert expected in result.stderr, (overrides, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
    assert objects(sagemaker, bucket) == []
    assert len(sagemaker.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == before


def test_dry_run_prints_the_requests_and_sends_nothing(tmp_path, sagemaker, distilbert_dir, conll_dir):
    bucket = sagemaker.create_bucket("dry-run")
    role = sagemaker.create_role_named("dry-run")
    before = len(sagemaker.client("sagemaker").list_training_jobs()["TrainingJobSummaries"])
    result = run_module(
        "quantsweep.cli",
        "--multirun",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        "quantization=dynamic,static",
        *launcher_args(sagemaker, bucket, role),
        "hydra.launcher.dry_run=true",
        "hydra.launcher.use_spot_instances=true",
        "hydra.launcher.max_wait_seconds=90000",
        "+hydra.launcher.tags.team=nlp",
        cwd=tmp_path,
        env=sagemaker.environment(),
    )
    requests = [json.loads(block) for block in _json_blocks(result.stdout)]
    assert len(requests) == 2
    request = requests[0]["CreateTrainingJob"]
    assert request["role_arn"] == role
    assert request["resource_config"]["instance_type"] == "ml.c5.xlarge"
    assert request["enable_managed_spot_training"] is True
    assert request["stopping_condition"]["max_wait_time_in_seconds"] == 90000
    assert request["tags"] == [{"key": "team", "value": "nlp"}]
    assert {c["channel_name"] for c in request["input_data_config"]} >= {"bundle", "job"}
    assert objects(sagemaker, bucket) == []
    assert len(sagemaker.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == before


def _json_blocks(text: str) -> list[str]:
    blocks: list[str] = []
    current: list[str] = []
    depth = 0
    for line in text.splitlines():
        if not current and not line.startswith("{"):
            continue
        current.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0:
            blocks.append("\n".join(current))
            current = []
    return blocks


def test_a_remote_sweep_lands_like_a_local_one(
    tmp_path,
    sagemaker,
    distilbert_dir,
    conll_dir,
    mlflow_server,
):
    bucket = sagemaker.create_bucket("remote-sweep")
    role = sagemaker.create_role_named("remote-sweep")
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        "quantization=dynamic,static",
        *FAST,
        f"mlflow.tracking_uri={mlflow_server}",
        "mlflow.experiment_name=remote-sweep",
        # the containers try to log too, and cannot: the server is on this side of the firewall
        "hydra.launcher.mlflow_from_container=true",
        *launcher_args(sagemaker, bucket, role),
        f"hydra.sweep.dir={sweep}",
    ]
    before = set(sagemaker.finished)
    server = urllib.parse.urlsplit(mlflow_server)
    sagemaker.unreachable.add((str(server.hostname), int(server.port or 80)))
    try:
        result = run_module("quantsweep.cli", *args, cwd=tmp_path, env=sagemaker.environment())
    finally:
        sagemaker.unreachable.clear()
    # printed before anything is submitted: the exact install each job runs
    assert "Each training job runs the bundle's install.sh" in result.stderr
    assert "-c container-constraints.txt" in result.stderr

    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert [j.name.split("-")[0] for j in jobs] == ["dynamic", "static"]
    for job in jobs:
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "quantsweep.log", "model_quantized.onnx"):
            assert (job / name).is_file(), (job, name)
        saved = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        results = json.loads((job / "results.json").read_text())
        # the user's paths, not the container's channel paths
        assert saved["model_name_or_path"] == str(distilbert_dir)
        assert results["config"]["dataset"]["path"] == str(conll_dir)
    assert (sweep / "README.md").is_file() and (sweep / "results.csv").is_file()
    # The containers could not reach the server and said so; every job was logged at home,
    # once, and fetching the sweep twice more logs nothing again.
    for job in jobs:
        assert "unreachable" in (job / "quantsweep.log").read_text(), job
    said = result.stdout + result.stderr
    assert said.count("MLflow: the container did not log") == 2, said[-3000:]
    experiment = rest(mlflow_server, "experiments/get-by-name?experiment_name=remote-sweep")["experiment"]
    logged = runs_of(mlflow_server, experiment["experiment_id"])
    children = sorted(r["info"]["run_id"] for r in logged if _tag(r, "mlflow.parentRunId"))
    assert len(children) == 2 and len(logged) == 3, logged
    assert sorted(str(_tag(r, "quantsweep.job_dir")) for r in logged if _tag(r, "mlflow.parentRunId")) == [
        str(j) for j in jobs
    ]
    for _ in range(2):
        fetched = run_module(
            "hydra_plugins.quantsweep_sagemaker._cli",
            "fetch",
            str(sweep),
            cwd=tmp_path,
            env=sagemaker.environment(),
        )
        assert fetched.stderr.count("home already") == 2, fetched.stderr[-3000:]
        assert "2 of 2 job(s) home" in fetched.stderr
    again = runs_of(mlflow_server, experiment["experiment_id"])
    assert sorted(r["info"]["run_id"] for r in again) == sorted(r["info"]["run_id"] for r in logged)

    keys = objects(sagemaker, bucket)
    # model and data uploaded once for both jobs, content-addressed
    inputs = {k.split("/")[2] for k in keys if k.startswith("quantsweep/inputs/")}
    assert len(inputs) == 2
    wheel = next(k for k in keys if k.endswith(".whl"))
    local_wheel = tmp_path / "bundle.whl"
    sagemaker.client("s3").download_file(bucket, wheel, str(local_wheel))
    names = zipfile.ZipFile(local_wheel).namelist()
    assert not [n for n in names if n.startswith((".git", "outputs/")) or "/outputs/" in n or ".cache" in n]
    assert "hydra_plugins/quantsweep_sagemaker/_container.py" in names
    assert not [k for k in keys if k.endswith(".pkl")]  # data only, both ways
    for job in jobs:
        archive = next(k for k in keys if k.endswith("model.tar.gz") and job.name.split("-")[0] in k)
        target = tmp_path / "model.tar.gz"
        sagemaker.client("s3").download_file(bucket, archive, str(target))
        with tarfile.open(target) as archive_file:
            assert "return.json" in archive_file.getnames()
    # the container's install kept the image's torch: nothing torch or CUDA was installed for the jobs
    names = sorted(set(sagemaker.finished) - before)
    assert len(names) == 2
    assert_isolated(sagemaker, names)
    for name in names:
        site = next((sagemaker.environments[name] / "lib").glob("python3*/site-packages"))
        installed = sorted(p.name.lower() for p in site.iterdir())
        assert any(n.startswith("quantsweep-") for n in installed)  # the bundle, installed by the job
        assert not [n for n in installed if n.startswith(("torch", "nvidia", "triton"))], installed


def test_a_failed_job_reports_sagemakers_reason_and_the_others_finish(
    tmp_path, preinstalled_image, distilbert_dir, conll_dir
):
    # on the preinstalled-bundle image: the real pip install is the remote sweep's test above
    sagemaker = preinstalled_image
    bucket = sagemaker.create_bucket("failing")
    role = sagemaker.create_role_named("failing")
    sweep = tmp_path / "sweep"
    fast = [a for a in FAST if not a.startswith("benchmark.duration")]
    result = run_module(
        "quantsweep.cli",
        "--multirun",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *fast,
        "benchmark.duration=-1,0.04",
        "mlflow.enabled=false",
        *launcher_args(sagemaker, bucket, role),
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=False,
        env=sagemaker.environment(),
    )
    assert result.returncode != 0
    assert "ended Failed" in result.stderr and "benchmark.duration" in result.stderr
    assert "Last log lines" in result.stderr
    finished = [p for p in sweep.iterdir() if (p / "results.json").is_file()]
    assert len(finished) == 1


# Hydra's own launcher test suites, run through the launcher, moto and the harness.


@pytest.fixture
def hydra_default_version_base() -> Iterator[None]:
    """Hydra's suites assume no version_base was given; other tests (compose with "1.3") set it globally."""
    from hydra import version

    instance = version.VersionBase.instance()
    saved = instance.getbase()
    instance.setbase(version.__compat_version__)
    yield
    # not setbase(): it refuses Hydra's own "unspecified" marker, which a run of this file
    # alone (before any test composed with a version base) must get back
    instance.version_base = saved


def suite_flags() -> list[str]:
    return [
        "hydra/launcher=sagemaker",
        "hydra.launcher.role=arn:aws:iam::123456789012:role/hydra-suites",
        f"hydra.launcher.s3_prefix=s3://{SUITE_BUCKET}/suites",
        "hydra.launcher.poll_seconds=0.2",
        "hydra.launcher.instance_type=ml.c5.xlarge",
        f"hydra.launcher.project_dir={REPO}",
    ]


_SUITE_CLOSURES: dict[str, Callable[[Any], Any]] = {
    "LauncherTestSuite.get_task_function.<locals>.task_func": sagemaker_suite_tasks.return_100,
    "LauncherTestSuite.test_sweep_with_custom_resolver.<locals>.task_func": sagemaker_suite_tasks.return_x,
}


class ImportableSweep(SweepTaskFunction):
    """Hydra's SweepTaskFunction, but Hydra gets a task an import path names, not this object.

    The suite's own object and closures cannot travel as data (see sagemaker_suite_tasks);
    the same multirun, with module-level functions that do what the closures do.
    """

    def __enter__(self) -> ImportableSweep:
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import detect_task_name
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.utils import validate_config_path

        overrides = copy.deepcopy(self.overrides)
        assert overrides is not None and self.temp_dir
        Path(self.temp_dir).mkdir(parents=True, exist_ok=True)
        overrides.append(f"hydra.sweep.dir={self.temp_dir}")
        name = getattr(self.task_function, "__qualname__", "")
        task = _SUITE_CLOSURES.get(name) or self.task_function or sagemaker_suite_tasks.return_100
        try:
            validate_config_path(self.config_path)
            hydra_ = Hydra.create_main_hydra_file_or_module(
                calling_file=self.calling_file,
                calling_module=self.calling_module,
                config_path=self.config_path,
                job_name=detect_task_name(self.calling_file, self.calling_module),
            )
            self.returns = hydra_.multirun(
                config_name=self.config_name,
                task_function=task,
                overrides=overrides,
                with_log_configuration=self.configure_logging,
            )
        finally:
            GlobalHydra().clear()
        return self


@pytest.fixture
def hydra_sweep_runner() -> Callable[..., SweepTaskFunction]:
    """Hydra's fixture of that name, making ImportableSweep objects."""

    def make(
        calling_file: str | None,
        calling_module: str | None,
        task_function: Any,
        config_path: str | None,
        config_name: str | None,
        overrides: list[str] | None,
        temp_dir: Path | None = None,
        configure_logging: bool = False,
    ) -> SweepTaskFunction:
        sweep = ImportableSweep()
        sweep.calling_file = calling_file
        sweep.calling_module = calling_module
        sweep.task_function = task_function
        sweep.config_path = config_path
        sweep.config_name = config_name
        sweep.overrides = overrides or []
        sweep.temp_dir = str(temp_dir)
        sweep.configure_logging = configure_logging
        return sweep

    return make


@pytest.fixture
def preinstalled_image(sagemaker: FakeSageMaker) -> Iterator[FakeSageMaker]:
    """Jobs run on an image with the bundle preinstalled, as launchers/Dockerfile builds one."""
    sagemaker.preinstalled = True
    yield sagemaker
    sagemaker.preinstalled = False


@pytest.mark.usefixtures("sagemaker", "preinstalled_image", "hydra_default_version_base")
@pytest.mark.parametrize("launcher_name, overrides", [("sagemaker", suite_flags()[1:])])
class TestLauncherSuite(LauncherTestSuite):
    pass


@pytest.mark.usefixtures("sagemaker", "preinstalled_image")
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", *suite_flags()])])
class TestIntegrationSuite(IntegrationTestSuite):
    def get_test_app_working_dir(self) -> Path:
        return HARNESS_DIR / "opt" / "ml" / "work"


class _Planted:
    """A pickle whose loading creates a marker file (as a planted pickle could run any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickle_planted_in_the_output_is_never_loaded(tmp_path, sagemaker, hydra_default_version_base):
    """Inside model.tar.gz and in the output prefix: the job comes home from return.json alone."""
    marker = tmp_path / "unpickled"
    planted = pickle.dumps(_Planted(marker))
    # the plant is live: loading it would leave the marker
    subprocess.run(
        [sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
        input=planted,
        check=True,
        cwd=Path(__file__).parent,
    )
    assert marker.exists()
    marker.unlink()
    s3 = sagemaker.client("s3")
    for key in ("suites/return.pkl", "suites/output/return.pkl", "suites/planted/output/model/return.pkl"):
        s3.put_object(Bucket=SUITE_BUCKET, Key=key, Body=planted)
    sagemaker.planted = {"return.pkl": planted, "job.pkl": planted}
    before = set(sagemaker.finished)
    try:
        sweep = ImportableSweep()
        sweep.calling_module = "hydra.test_utils.a_module"
        sweep.config_path = "configs"
        sweep.config_name = "compose.yaml"
        sweep.overrides = [*suite_flags(), "+a=0,1"]
        sweep.temp_dir = str(tmp_path / "sweep")
        with sweep:
            assert sweep.returns is not None
            returns = sweep.returns[0]
            assert [r.return_value for r in returns] == [100, 100]
            assert all(
                Path(str(r.hydra_cfg.hydra.runtime.output_dir), ".hydra", "config.yaml").is_file()
                for r in returns
            )
    finally:
        sagemaker.planted = {}
    assert not marker.exists()
    assert_isolated(sagemaker, sorted(set(sagemaker.finished) - before))
    archives = [k for k in objects(sagemaker, SUITE_BUCKET) if k.endswith("model.tar.gz")]
    body = s3.get_object(Bucket=SUITE_BUCKET, Key=archives[-1])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert "return.pkl" in tar.getnames()  # it was there to be loaded


@pytest.mark.usefixtures("hydra_default_version_base")
def test_a_task_no_import_path_names_is_refused_before_anything_is_uploaded(tmp_path, sagemaker, capsys):
    bucket = sagemaker.create_bucket("closure")

    def closure(cfg: Any) -> Any:
        return 1

    sweep = SweepTaskFunction()  # Hydra's own: it hands the launcher itself, an object
    sweep.calling_module = "hydra.test_utils.a_module"
    sweep.config_path = "configs"
    sweep.config_name = "compose.yaml"
    sweep.task_function = closure
    sweep.overrides = [
        *(f for f in suite_flags() if not f.startswith("hydra.launcher.s3_prefix")),
        f"hydra.launcher.s3_prefix=s3://{bucket}/quantsweep",
    ]
    sweep.temp_dir = str(tmp_path / "sweep")
    with pytest.raises(SystemExit):
        sweep.__enter__()
    error = capsys.readouterr().err
    assert "cannot ship the task" in error and "SweepTaskFunction" in error, error
    assert "Traceback" not in error
    assert objects(sagemaker, bucket) == []
