"""Config composition, the typed schema and the semantic checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from quantsweep.cli import job_name, to_run_config
from quantsweep.config import Approach, CalibrationMethod, ConfigError, RunConfig, exporter_opset_range
from quantsweep.tasks.checks import check_task


def composed(*overrides: str):
    with initialize_config_module(config_module="quantsweep.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_defaults_reproduce_the_seed_cards_fixed_parameters():
    cfg = to_run_config(composed())
    assert cfg.task == "token-classification"
    assert cfg.model_name_or_path == "elastic/distilbert-base-uncased-finetuned-conll03-english"
    assert (cfg.dataset.path, cfg.dataset.name, cfg.dataset.revision) == (
        "eriktks/conll2003",
        "conll2003",
        "refs/convert/parquet",
    )
    assert cfg.dataset.eval_split == "validation"
    assert cfg.dataset.data_keys == {"primary": "tokens"}
    assert cfg.dataset.ref_keys == ["ner_tags"]
    assert cfg.dataset.calibration_split == "train"
    assert cfg.dataset.max_eval_samples is None
    assert cfg.per_channel is False
    assert cfg.calibration.method is CalibrationMethod.minmax
    assert cfg.calibration.num_calibration_samples == 100
    assert cfg.framework == "onnxruntime"
    assert (cfg.framework_args.opset, cfg.framework_args.optimization_level) == (11, 1)
    assert cfg.aware_training is False
    assert cfg.benchmark.batch_sizes == [1, 4, 8]
    assert cfg.benchmark.input_lengths == [32, 64, 128]
    assert cfg.benchmark.duration == 15.0


@pytest.mark.parametrize(
    ("overrides", "approach", "operators", "nodes"),
    [
        (["quantization=static", "operators=add_matmul"], Approach.static, ["Add", "MatMul"], []),
        (
            ["operators=add", "exclusion=sensitive"],
            Approach.dynamic,
            ["Add"],
            ["layernorm", "gelu", "residual", "gather", "softmax"],
        ),
        (
            ["exclusion.nodes=[layernorm,/classifier/MatMul]"],
            Approach.dynamic,
            ["Add", "MatMul"],
            ["layernorm", "/classifier/MatMul"],
        ),
    ],
)
def test_group_overrides(overrides, approach, operators, nodes):
    cfg = to_run_config(composed(*overrides))
    assert cfg.quantization.approach is approach
    assert cfg.operators.operators_to_quantize == operators
    assert cfg.exclusion.nodes == nodes


def test_exclusion_search_groups():
    auto = to_run_config(composed("quantization=static", "exclusion=auto")).exclusion
    assert auto.auto and auto.nodes == [] and auto.start_from == [] and auto.max_f1_drop == 0.005
    pruning = to_run_config(composed("quantization=static", "exclusion=auto_sensitive")).exclusion
    assert pruning.auto and pruning.start_from == ["layernorm", "gelu", "residual", "gather", "softmax"]
    fixed = to_run_config(composed("exclusion=nodes", "exclusion.nodes=[/a/Add,/b.c/MatMul_1]")).exclusion
    assert not fixed.auto and fixed.nodes == ["/a/Add", "/b.c/MatMul_1"]


def test_calibration_groups_carry_their_knobs():
    cfg = to_run_config(composed("calibration=percentile", "calibration.percentile=99.9"))
    assert cfg.calibration.method is CalibrationMethod.percentile
    assert cfg.calibration.percentile == 99.9
    assert to_run_config(composed("calibration=entropy")).calibration.num_quantized_bins == 128


def test_experiment_seed_card_declares_the_eight_job_sweep():
    with initialize_config_module(config_module="quantsweep.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=seed_card"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params == {
        "quantization": "dynamic,static",
        "operators": "add,add_matmul",
        "exclusion": "none,sensitive",
    }


def test_typo_in_a_key_fails_at_composition():
    with pytest.raises(Exception, match="aproach"):
        composed("quantization.aproach=static")


def test_wrong_type_fails_at_composition():
    with pytest.raises(Exception, match=r"benchmark\.duration"):
        composed("benchmark.duration=fast")


def test_unknown_group_option_fails():
    with pytest.raises(Exception, match="quantization"):
        composed("quantization=float8")


def test_unknown_task_names_the_known_ones():
    with pytest.raises(
        Exception, match=r"(?s)task/question-answering.*text-classification\s+token-classification"
    ):
        composed("task=question-answering")


def test_a_saved_config_with_an_unknown_task_is_refused():
    # a saved config.yaml (quantsweep-reproduce) has no defaults list: the task side checks, where
    # it becomes a RunConfig (the schema knows nothing of tasks)
    with pytest.raises(ConfigError, match=r"`task` is 'question-answering'; supported: token-classification"):
        to_run_config(OmegaConf.create({"task": "question-answering"}))
    with pytest.raises(ConfigError, match=r"`task` is 'question-answering'; supported: token-classification"):
        check_task(RunConfig(task="question-answering"))


def test_task_group_sets_the_task_and_its_defaults():
    cfg = to_run_config(composed("task=text-classification"))
    assert cfg.task == "text-classification"
    assert cfg.dataset.data_keys == {"primary": "sentence", "secondary": None} and cfg.dataset.ref_keys == [
        "label"
    ]
    pair = to_run_config(
        composed("task=text-classification", "dataset.data_keys={primary: premise, secondary: hypothesis}")
    )
    assert pair.dataset.data_keys == {"primary": "premise", "secondary": "hypothesis"}
    assert to_run_config(composed()).task == "token-classification"


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (
            ["quantization=static", "dataset.calibration_split=null"],
            "dataset.calibration_split",
            "static quantization needs",
        ),
        (["aware_training=true"], "aware_training", "not supported"),
        (["framework_args.opset=99"], "framework_args.opset", "exporter writes opsets"),
        (["framework_args.opset=5"], "framework_args.opset", "exporter writes opsets"),
        (["benchmark.batch_sizes=[1,0]"], "benchmark.batch_sizes", "positive integer (got 0)"),
        (["benchmark.input_lengths=[-8]"], "benchmark.input_lengths", "positive integer"),
        (["benchmark.duration=0"], "benchmark.duration", "positive number of seconds"),
        (["operators.operators_to_quantize=[add]"], "operators.operators_to_quantize", "case-sensitive"),
        (["framework_args.optimization_level=2"], "framework_args.optimization_level", "contrib ops"),
        (
            ["task=text-classification", "+dataset.data_keys.tertiary=x"],
            "dataset.data_keys",
            "optionally `secondary`",
        ),
        (["task=text-classification", "dataset.ref_keys=[]"], "dataset.ref_keys", "the label column"),
        (["+dataset.data_keys.secondary=x"], "dataset.data_keys", "exactly one key"),
        (["calibration.num_calibration_samples=0"], "calibration.num_calibration_samples", "positive"),
        (["quantization.instruction_set=sse2"], "quantization.instruction_set", "avx2"),
    ],
)
def test_semantic_errors_name_key_value_and_allowed(overrides, key, fragment):
    with pytest.raises(ConfigError) as error:
        to_run_config(composed(*overrides))
    message = str(error.value)
    assert f"`{key}`" in message
    assert fragment in message
    assert "\n" not in message  # one paragraph


def test_opset_range_comes_from_the_installed_exporter():
    import torch.onnx._constants as constants

    assert exporter_opset_range() == (constants.ONNX_MIN_OPSET, constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)


def test_run_config_is_plain_dataclasses():
    cfg = to_run_config(composed())
    assert isinstance(cfg, RunConfig)
    assert not OmegaConf.is_config(cfg.benchmark)


def test_job_names_come_from_group_choices():
    choices = {
        "quantization": "dynamic",
        "operators": "add_matmul",
        "exclusion": "none",
        "calibration": "minmax",
    }
    assert job_name(["quantization=static", "exclusion=sensitive"], choices) == "static-add_matmul-sensitive"
    assert job_name(["+experiment=seed_card", "force=true"], choices) == "dynamic-add_matmul-none"
    with_data = job_name(["quantization=static", "dataset.path=/data/x"], choices)
    other_data = job_name(["quantization=static", "dataset.path=/data/y"], choices)
    assert with_data.startswith("static-add_matmul-none-") and with_data != other_data
    assert (
        job_name(["quantization=static", "calibration=entropy"], choices) == "static-add_matmul-none-entropy"
    )
    # how to run a job (MLflow, the cache) does not name its folder, as it does not change its digest
    assert job_name(
        ["mlflow.enabled=false", "cache_dir=/tmp/c", "mlflow.tracking_uri=http://h"], choices
    ) == ("dynamic-add_matmul-none")
    # the hash of other overrides never depends on a credential in them
    secret = [job_name([f"dataset.path=https://alice:{pw}@host/data"], choices) for pw in ("one", "two")]
    assert secret[0] == secret[1] != "dynamic-add_matmul-none"


def test_help_lists_groups_and_imports_no_heavy_library():
    code = (
        "import sys, runpy; sys.argv=['quantsweep','--help'];\n"
        "try:\n    runpy.run_module('quantsweep.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','onnxruntime','transformers','optimum','datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "quantization: dynamic, static" in out
    assert "operators: add, add_matmul, matmul" in out
    assert "exclusion: auto, auto_sensitive, nodes, none, sensitive" in out
    assert "calibration: entropy, minmax, percentile" in out
    assert "HEAVY []" in out


EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml")
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_every_experiment_composes_into_a_valid_config(experiment: str) -> None:
    """Each `+experiment=` option, and each job its sweep would run, passes the typed schema's checks."""
    import itertools

    with initialize_config_module(config_module="quantsweep.conf", version_base="1.3"):
        base = compose(
            config_name="config", overrides=[f"+experiment={experiment}"], return_hydra_config=True
        )
        params = dict(base.hydra.sweeper.params or {})
        choices = [
            [f"{key}={value.strip()}" for value in str(values).split(",")] for key, values in params.items()
        ]
        jobs = list(itertools.product(*choices))
        assert jobs, experiment
        for job in jobs:
            cfg = to_run_config(compose(config_name="config", overrides=[f"+experiment={experiment}", *job]))
            assert isinstance(cfg, RunConfig), job
    assert len(jobs) == 8  # both experiments are the seed card's 8-job sweep
