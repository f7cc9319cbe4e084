"""No credential leaves the machine through the SageMaker launcher: a tracking URI's password.

A tracking URI may carry basic-auth credentials (``http://user:password@host``), and the
launcher handles it at every step: Hydra's ``multirun.yaml``, the job payloads and the
sweep record (locally and in the bucket), the CreateTrainingJob requests, every message,
and the refusal of ``hydra.launcher.mlflow_from_container``. A payload or a record in the
bucket is readable by whoever may read the bucket, a training job's Environment by whoever
may describe it, so the password must reach none of them, nor any file it leaves behind.

The rehearsal runs the real CLI, as a user would, with a password no file on this machine
holds (a fresh random one): a dry run, a one-job sweep against moto on 127.0.0.1 with the
harness playing the container, then ``quantsweep-sagemaker fetch``. It then looks for the
password, and for its basic-auth form, everywhere those three could have put it: every file
under the working directory and the harness's ``/opt/ml`` (archives opened), every object in
moto's S3, the body and URL of every request moto received (moto's own recorder), and all
they printed. The tracking server is a recording stand-in for a password-protected MLflow
server (a reverse proxy with basic auth, as people usually protect one): it checks the
credentials and records every request, and serves no MLflow behind them, since what the
launcher sends is the question here, not what MLflow stores (``test_sagemaker_launcher``
logs to a real ``mlflow server``). Its record shows which credentials reached it.

The harness's image is this test environment's own packages (the job still runs its real
install command, which puts the bundle's wheel into an environment of its own): installing
quantsweep's dependencies from nothing costs minutes, and the container's isolation is
``test_sagemaker_launcher``'s subject, not this file's. The bundle is built from the
checkout the tested code is imported from, so that the container runs the same code as home.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sagemaker_harness import ContainerImage, FakeSageMaker

from quantsweep.testing import run_module

# the checkout whose code is imported (the bundle is built from it): a baseline copy on
# PYTHONPATH is tested whole, container included
# the checkout the tests run from (the package itself may be an installed wheel)
PROJECT = Path(__file__).resolve().parents[2]
FAST = [
    "quantization=dynamic",
    "benchmark.duration=0.02",
    "benchmark.batch_sizes=[1]",
    "benchmark.input_lengths=[8]",
    "benchmark.warmup=0",
    "benchmark.windows=2",
    "benchmark.threads=1",
]
USER = "alice"


class ThisEnvironmentImage(ContainerImage):
    """The harness's image, standing in with this environment's packages instead of a fresh venv's.

    Each job's environment is still layered on it and installs the bundle's wheel with the
    job's own command; only quantsweep's dependencies come from here, already installed.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.venv = Path(sys.prefix)
        self.python = Path(sys.executable)


@dataclass
class Received:
    phase: str
    method: str
    path: str
    authorization: str
    body: bytes


@dataclass
class TrackingServer:
    """A password-protected tracking server's front: basic auth checked, every request recorded.

    It answers ``/health`` (so the sweep finds the server up and tries to log), refuses wrong
    credentials with 401 as a proxy would, and has no MLflow behind it (404 for the rest).
    """

    user: str
    password: str
    phase: str = ""
    received: list[Received] = field(default_factory=list)

    def __enter__(self) -> TrackingServer:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                authorization = str(self.headers.get("Authorization") or "")
                server.received.append(Received(server.phase, self.command, self.path, authorization, body))
                if authorization != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                    text = b"401 Authorization Required"
                elif self.path.startswith("/health"):
                    self.send_response(200)
                    text = b"OK"
                else:
                    self.send_response(404)
                    text = b"no MLflow behind this proxy"
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the record above is what the test reads

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.http.server_address[1])
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(timeout=10)

    @property
    def uri(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSageMaker]:
    image = ThisEnvironmentImage(tmp_path_factory.mktemp("image"))
    with (
        FakeSageMaker(tmp_path_factory.mktemp("harness"), image) as sagemaker,
        pytest.MonkeyPatch.context() as patch,
    ):
        for name, value in sagemaker.environment().items():
            patch.setenv(name, value)
        yield sagemaker


def launcher_args(fake: FakeSageMaker, bucket: str) -> list[str]:
    return [
        "hydra/launcher=sagemaker",
        f"hydra.launcher.role={fake.create_role_named(bucket)}",
        f"hydra.launcher.s3_prefix=s3://{fake.create_bucket(bucket)}/quantsweep",
        "hydra.launcher.poll_seconds=0.5",
        "hydra.launcher.instance_type=ml.c5.xlarge",
        f"hydra.launcher.project_dir={PROJECT}",
    ]


@dataclass
class Rehearsal:
    password: str
    folders: list[Path]
    sweep: Path
    printed: dict[str, str]
    objects: dict[str, bytes]
    requests: list[dict[str, Any]]
    tracking: list[Received]


@pytest.fixture(scope="module")
def rehearsal(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeSageMaker, distilbert_dir: Path, conll_dir: Path
) -> Iterator[Rehearsal]:
    """A dry run, a one-job sweep and a fetch, with a password in the tracking URI; what they left."""
    from moto.moto_api import recorder

    work = tmp_path_factory.mktemp("secrets")
    password = f"pw-{secrets.token_hex(12)}"
    bucket = "secrets"
    env = fake.environment()
    printed: dict[str, str] = {}
    recording = tmp_path_factory.mktemp("recording") / "moto-requests.jsonl"
    # moto's recorder is process-wide; it keeps its file where MOTO_RECORDER_FILEPATH said at import
    saved_location = recorder._location
    recorder._location = str(recording)
    recorder.reset_recording()
    recorder.start_recording()
    try:
        with TrackingServer(USER, password) as server:
            args = [
                "--multirun",
                f"model_name_or_path={distilbert_dir}",
                f"dataset.path={conll_dir}",
                *FAST,
                f"mlflow.tracking_uri={server.uri}",
                "mlflow.experiment_name=secrets",
                *launcher_args(fake, bucket),
            ]
            server.phase = "dry run"
            dry = run_module(
                "quantsweep.cli",
                *args,
                "hydra.launcher.dry_run=true",
                f"hydra.sweep.dir={work / 'dry'}",
                cwd=work,
                env=env,
            )
            printed["dry run"] = dry.stdout + dry.stderr
            server.phase = "sweep"
            sweep = work / "sweep"
            ran = run_module("quantsweep.cli", *args, f"hydra.sweep.dir={sweep}", cwd=work, env=env)
            printed["sweep"] = ran.stdout + ran.stderr
            # later, as after wait=false: the URI it finds is the job's saved one, password blanked
            server.phase = "fetch"
            fetched = run_module(
                "hydra_plugins.quantsweep_sagemaker._cli", "fetch", str(sweep), cwd=work, env=env, check=False
            )
            printed["fetch"] = fetched.stdout + fetched.stderr
            assert "1 of 1 job(s) home" in fetched.stderr, fetched.stderr[-3000:]
        s3 = fake.client("s3")
        objects = {
            f"s3://{bucket}/{item['Key']}": s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        }
    finally:
        recorder.stop_recording()
        recorder._location = saved_location
    requests = [json.loads(line) for line in recording.read_text().splitlines() if line.strip()]
    folders = [work, fake.workdir, fake.image.folder]
    yield Rehearsal(password, folders, sweep, printed, objects, requests, server.received)


def _contents(label: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The bytes, and those of every member of an archive (tar, gzip, zip: a wheel), nested."""
    yield label, data
    if data[:2] == b"\x1f\x8b":
        import gzip

        try:
            inner = gzip.decompress(data)
        except OSError:
            return
        yield from _contents(f"{label} (gunzipped)", inner)
    elif len(data) > 262 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    yield from _contents(f"{label}!{member.name}", extracted.read())
    elif data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                yield from _contents(f"{label}!{name}", archive.read(name))


def _holding(needles: list[bytes], found: Iterator[tuple[str, bytes]]) -> list[str]:
    return [label for label, data in found if any(n in data for n in needles)]


def _needles(password: str) -> list[bytes]:
    # the password itself, and as a basic-auth header would carry it
    return [password.encode(), base64.b64encode(f"{USER}:{password}".encode())]


def _sent(request: dict[str, Any]) -> bytes:
    """What moto's recorder kept of a request: its URL and body (base64 when it was bytes)."""
    body = request.get("body") or ""
    return str(request["url"]).encode() + (
        base64.b64decode(body) if request.get("body_encoded") else str(body).encode()
    )


def _files(folders: list[Path]) -> Iterator[tuple[str, bytes]]:
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield from _contents(str(path), path.read_bytes())


def test_no_password_in_what_a_dry_run_a_sweep_and_a_fetch_write_upload_send_or_print(
    rehearsal: Rehearsal,
) -> None:
    needles = _needles(rehearsal.password)
    # the rehearsal did what it says: the sweep ran and came home, records and payloads exist
    job = next(p for p in rehearsal.sweep.iterdir() if (p / "results.json").is_file())
    assert (job / ".hydra" / "config.yaml").is_file()
    for written in ("multirun.yaml", "sagemaker-sweep.json"):
        assert (rehearsal.sweep / written).is_file(), written
    assert (rehearsal.sweep.parent / "dry" / "multirun.yaml").is_file()
    uploaded = sorted(rehearsal.objects)
    for name in ("/job.json", "/sweep.json", "/model.tar.gz"):
        assert [k for k in uploaded if k.endswith(name)], (name, uploaded)
    assert any(r["method"] == "PUT" and "job.json" in r["url"] for r in rehearsal.requests)
    assert any("CreateTrainingJob" in json.dumps(r["headers"]) for r in rehearsal.requests)

    leaks = {
        "files written": _holding(needles, _files(rehearsal.folders)),
        "objects uploaded": _holding(
            needles, (c for key, body in rehearsal.objects.items() for c in _contents(key, body))
        ),
        "requests sent to AWS": _holding(
            # an archive's body is opened above, as the object it became
            needles,
            ((f"{r['method']} {r['url']}", _sent(r)) for r in rehearsal.requests),
        ),
        "printed": _holding(needles, ((phase, text.encode()) for phase, text in rehearsal.printed.items())),
        # the tracking server may get the credentials (that is what they are for), in the header only
        "sent to the tracking server": _holding(
            needles, ((f"{r.method} {r.path}", r.path.encode() + r.body) for r in rehearsal.tracking)
        ),
    }
    assert not any(leaks.values()), {where: found[:10] for where, found in leaks.items() if found}
    # what the user saw instead: the URI with its credentials blanked
    assert "http://***@127.0.0.1" in (rehearsal.sweep / "multirun.yaml").read_text()


def test_home_logs_with_the_credentials_given_and_the_container_never_gets_them(
    rehearsal: Rehearsal,
) -> None:
    """A sweep logs to a password-protected server as a local sweep does: with the URI as given."""
    expected = "Basic " + base64.b64encode(f"{USER}:{rehearsal.password}".encode()).decode()
    during = [r for r in rehearsal.tracking if r.phase == "sweep"]
    # the server check at the start, then the job's logging once it was home (no MLflow answers here)
    assert any(r.path.startswith("/health") for r in during), during
    assert any(r.path.startswith("/api/") for r in during), [r.path for r in during]
    wrong = [f"{r.method} {r.path}: {r.authorization or '-'}" for r in during if r.authorization != expected]
    assert not wrong, wrong
    # later, fetch has only the job's saved URI, http://***@...: it needs MLFLOW_TRACKING_USERNAME/PASSWORD
    later = [r for r in rehearsal.tracking if r.phase == "fetch"]
    assert later and not [r for r in later if r.authorization == expected], later


CONTAINER_CASES = {
    # a database store: local to this machine, so refused, and its URI quoted
    "a database store": ("postgresql://alice:{password}@db.internal:5432/mlflow", True, {}),
    "MLflow turned off": ("http://alice:{password}@mlflow.internal:5000", False, {}),
    # the container would need the password, which is never sent
    "a password in the URI": ("https://alice:{password}@mlflow.internal", True, {}),
    "MLflow's variables here": (
        "https://mlflow.internal",
        True,
        {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "{password}"},
    ),
}


@pytest.mark.parametrize("case", sorted(CONTAINER_CASES))
def test_the_mlflow_from_container_refusal_never_quotes_a_password(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_plugins.quantsweep_sagemaker.config import LauncherConfigError, SageMakerLauncherConf, check

    password = f"pw-{secrets.token_hex(12)}"
    uri, enabled, variables = CONTAINER_CASES[case]
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(password=password))
    conf = SageMakerLauncherConf(
        role="arn:aws:iam::123456789012:role/quantsweep", region="us-east-1", mlflow_from_container=True
    )
    with pytest.raises(LauncherConfigError) as refused:
        check(conf, uri.format(password=password), enabled)
    said = str(refused.value)
    assert password not in said, said
    assert "`hydra.launcher.mlflow_from_container` is True" in said and "\n" not in said, said
    if "@" in uri:
        assert "://***@" in said, said  # the URI named, its credentials blanked
    for name in variables:
        assert name in said, said  # the variable named, never its value


def test_a_password_in_the_tracking_uri_refuses_mlflow_from_container_before_anything_is_sent(
    tmp_path: Path, fake: FakeSageMaker, distilbert_dir: Path, conll_dir: Path
) -> None:
    """The real CLI: exit 2, one paragraph, nothing uploaded, and multirun.yaml already scrubbed."""
    password = f"pw-{secrets.token_hex(12)}"
    sweep = tmp_path / "sweep"
    result = run_module(
        "quantsweep.cli",
        "--multirun",
        f"model_name_or_path={distilbert_dir}",
        f"dataset.path={conll_dir}",
        *FAST,  # should the refusal not come (before the fix), the sweep is one short job
        # nothing listens there (the sweep's start finds it down and says so, redacted)
        f"mlflow.tracking_uri=http://{USER}:{password}@127.0.0.1:9",
        "hydra.launcher.mlflow_from_container=true",
        *launcher_args(fake, "refused"),
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=False,
        env=fake.environment(),
    )
    said = result.stdout + result.stderr
    assert result.returncode == 2, said[-3000:]
    refusal = next((line for line in result.stderr.splitlines() if "mlflow_from_container" in line), "")
    assert "`hydra.launcher.mlflow_from_container` is True" in refusal, said[-3000:]
    assert "`mlflow.tracking_uri` (http://***@127.0.0.1:9)" in refusal and "Traceback" not in said
    assert password not in said
    assert password not in (sweep / "multirun.yaml").read_text()
    assert fake.client("s3").list_objects_v2(Bucket="refused").get("KeyCount", 0) == 0
