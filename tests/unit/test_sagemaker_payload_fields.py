from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf, open_dict
from test_sagemaker_payload import REPO, composed

from hydra_plugins.quantsweep_sagemaker import _payload


def test_the_task_travels_by_import_path_or_as_source_text() -> None:
    import sagemaker_suite_tasks

    import quantsweep.cli

    # the function Hydra hands the launcher is the undecorated one; its module's attribute is the wrapper
    assert _payload.task_reference(quantsweep.cli.run.__wrapped__) == {
        "module": "quantsweep.cli",
        "qualname": "run",
    }
    # a module no installed package provides: its source file, as text
    reference = _payload.task_reference(sagemaker_suite_tasks.return_100)
    assert reference["source"]["filename"] == "sagemaker_suite_tasks.py"
    assert reference["source"]["text"] == Path(sagemaker_suite_tasks.__file__).read_text()

    def closure(cfg: Any) -> Any:
        return cfg

    for task in (closure, print, object()):
        with pytest.raises(_payload.TaskReferenceError) as refused:
            _payload.task_reference(task)
        assert "\n" not in str(refused.value) and "import path" in str(refused.value)


def test_a_return_record_is_data_and_cannot_steer_home() -> None:
    def round_trip(value: Any, status: str = "COMPLETED") -> Any:
        record = _payload.return_record(status, "job/0", True, value)
        return _payload.read_return(json.dumps(record))

    assert round_trip({"f1": 0.5, "files": ["a"]}).value == {"f1": 0.5, "files": ["a"]}
    odd = round_trip(Path("/x"))
    assert odd.value == _payload.ReturnedValue("pathlib.PosixPath", "PosixPath('/x')")
    failed = round_trip(ValueError("bad"), "FAILED")
    assert isinstance(failed.value, _payload.RemoteJobError) and str(failed.value) == "ValueError: bad"
    for relative in ("../outside", "/etc", "a/../../b"):
        record = _payload.return_record("COMPLETED", relative, False, 1)
        with pytest.raises(_payload.PayloadError):
            _payload.read_return(json.dumps(record))
    with pytest.raises(_payload.PayloadError):
        _payload.read_return(json.dumps({"status": "COMPLETED", "relative_dir": "x"}))  # no format


def test_values_of_resolvers_only_home_has_travel_resolved() -> None:
    config = composed([])
    OmegaConf.register_new_resolver("home_only", lambda: "from home", replace=True)
    try:
        with open_dict(config):
            config.extra = {"home": "${home_only:}", "builtin": "${oc.env:HOME}"}
        payload = json.loads(_payload.dumps(_payload.job_payload(config, {}, {}, {})))
        paths = [item["path"] for item in payload["resolved_at_home"]]
        assert ["extra", "home"] in paths and ["extra", "builtin"] not in paths
        assert payload["config"]["extra"]["home"] == "${home_only:}"  # the interpolation itself travels
        # the container has the resolver (its task module registered it): it resolves there
        OmegaConf.register_new_resolver("home_only", lambda: "in the container", replace=True)
        assert _payload.rebuild_config(payload).extra.home == "in the container"
    finally:
        OmegaConf.clear_resolver("home_only")
    # it has not: the value resolved at home
    assert _payload.rebuild_config(payload).extra.home == "from home"


def test_the_images_python_is_checked_against_requires_python() -> None:
    from hydra_plugins.quantsweep_sagemaker import _bundle
    from hydra_plugins.quantsweep_sagemaker.config import LauncherConfigError

    requires = _bundle.requires_python(REPO)
    assert requires == ">=3.10"
    assert _bundle.default_image_python() == "3.13"  # the SDK's newest PyTorch training image: py313
    _bundle.check_image_python("3.13", "image_python", requires)
    _bundle.check_image_python("3.10", "image_python", requires)
    for python, expected in (("3.9", "is '3.9'"), ("three", "is 'three'"), (None, "is None")):
        with pytest.raises(LauncherConfigError) as refused:
            _bundle.check_image_python(python, "image_python", requires)
        assert f"`hydra.launcher.image_python` {expected}" in str(refused.value)
        assert ">=3.10" in str(refused.value) and "\n" not in str(refused.value)


def test_a_local_input_is_keyed_by_its_name_and_content_without_hidden_files(tmp_path) -> None:
    from hydra_plugins.quantsweep_sagemaker._core import input_key
    from hydra_plugins.quantsweep_sagemaker._s3 import Store

    model = tmp_path / "a" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    key = input_key(model)
    renamed = tmp_path / "b" / "other-name"
    shutil.copytree(model, renamed)
    assert input_key(renamed) != key  # the container finds it by name: another name is another upload
    (model / ".git").mkdir()
    (model / ".git" / "config").write_text("[remote] url = https://user:token@example.com")
    assert input_key(model) == key  # hidden files: not the model
    (model / "config.json").write_text('{"changed": 1}')
    assert input_key(model) != key

    sent: list[str] = []

    class Recorder:
        def upload_file(self, path: str, bucket: str, key: str, ExtraArgs: dict[str, str]) -> None:
            sent.append(key)

    Store(Recorder(), "123456789012").upload_folder(model, "s3://bucket/inputs/k/model", hidden=False)
    assert sent == ["inputs/k/model/config.json"]  # .git/config never leaves the machine


def test_a_sweep_record_or_an_output_that_points_elsewhere_is_refused(tmp_path) -> None:
    """Anyone who can write to the bucket could edit sweep.json or plant an archive: neither steers home."""
    import tarfile

    from hydra_plugins.quantsweep_sagemaker._home import FetchError, SweepRecord, bring_home
    from hydra_plugins.quantsweep_sagemaker._s3 import Store

    prefix = "s3://bucket/quantsweep/20261130-120000"
    record = {
        "format": 1,
        "region": "us-east-1",
        "prefix": prefix,
        "bucket_owner": "123456789012",
        "sweep_dir": "/x",
    }
    SweepRecord.from_json({**record, "jobs": [{"name": "qs-20261130-120000-000-dynamic"}]}, "sweep.json")
    with pytest.raises(FetchError, match="did not name"):
        SweepRecord.from_json({**record, "jobs": [{"name": "someone-elses-job"}]}, "sweep.json")

    class Planted:
        """An S3 client whose every object is an archive whose return.json names ``relative``."""

        relative = "."

        def download_file(self, bucket: str, key: str, path: str, ExtraArgs: dict[str, str]) -> None:
            folder = tmp_path / "planted"
            folder.mkdir(exist_ok=True)
            (folder / "return.json").write_text(
                json.dumps(_payload.return_record("COMPLETED", self.relative, True, None))
            )
            with tarfile.open(path, "w:gz") as tar:
                tar.add(folder / "return.json", arcname="return.json")

    store = Store(Planted(), "123456789012")
    name = "qs-20261130-120000-000-dynamic"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    elsewhere = {"ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/other/model.tar.gz"}}
    with pytest.raises(FetchError, match="not under this sweep"):
        bring_home(store, name, elsewhere, sweep, prefix)
    ours = {"ModelArtifacts": {"S3ModelArtifacts": f"{prefix}/output/{name}/output/model.tar.gz"}}
    with pytest.raises(FetchError, match="not one of the sweep's"):
        bring_home(store, name, ours, sweep, prefix)  # "." would pour the job over the sweep folder
    Planted.relative = "dynamic-add-none"
    assert bring_home(store, name, ours, sweep, prefix).job_dir == (sweep / "dynamic-add-none").resolve()


def test_a_second_launch_into_the_same_sweep_folder_keeps_the_first_launchs_jobs(tmp_path) -> None:
    """A sweeper that launches in batches (or a rerun) adds to the sweep record; fetch still finds every job."""
    from hydra_plugins.quantsweep_sagemaker._home import SweepRecord

    first = SweepRecord("us-east-1", "s3://b/q/20261130-120000", "123456789012", str(tmp_path),
                        [{"name": "qs-20261130-120000-000-a", "home": "a"}])  # fmt: skip
    first.save(tmp_path)
    second = SweepRecord("us-east-1", "s3://b/q/20261130-130000", "123456789012", str(tmp_path),
                         [{"name": "qs-20261130-130000-001-b", "prefix": "s3://b/q/20261130-130000", "home": None}])  # fmt: skip
    merged = second.after(SweepRecord.load(tmp_path))
    merged.save(tmp_path)
    again = SweepRecord.load(tmp_path)  # and it reads back: each job's name matches its own prefix
    assert [job["name"] for job in again.jobs] == ["qs-20261130-120000-000-a", "qs-20261130-130000-001-b"]
    assert [again.job_prefix(job) for job in again.jobs] == [
        "s3://b/q/20261130-120000",
        "s3://b/q/20261130-130000",
    ]
    assert again.jobs[0]["home"] == "a"


def test_a_bucket_of_another_account_is_refused_before_any_upload() -> None:
    """S3 answers HeadBucket with ExpectedBucketOwner 403 when the bucket is someone else's."""
    import boto3
    from botocore.stub import Stubber

    from hydra_plugins.quantsweep_sagemaker._s3 import BucketError, Store

    s3 = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x").client("s3")
    with Stubber(s3) as stub:
        owned = {"Bucket": "sagemaker-us-east-1-123456789012", "ExpectedBucketOwner": "123456789012"}
        stub.add_response("head_bucket", {}, owned)
        stub.add_client_error("head_bucket", "403", "Forbidden", 403, expected_params=owned)
        store = Store(s3, "123456789012")
        store.check_bucket("s3://sagemaker-us-east-1-123456789012/quantsweep/x")
        with pytest.raises(BucketError, match="belongs to another account than 123456789012"):
            store.check_bucket("s3://sagemaker-us-east-1-123456789012/quantsweep/x")
        stub.assert_no_pending_responses()
