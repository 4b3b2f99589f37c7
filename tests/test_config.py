"""The sweep spec: what it accepts, and the one-line error for each thing it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmops.config import load_spec, parse_spec, with_model_path
from slmops.preflight import preflight
from slmops.workspace import Workspace
from slmops.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model": {"path": "m", "name": "my-model"}}
DEMO_VARIANTS = [
    {"name": "fp32", "precision": "fp32"},
    {"name": "int8", "precision": "int8"},
    {"name": "int4-b32", "precision": "int4", "block_size": 32, "symmetric": False},
    {"name": "int4-b128", "precision": "int4", "block_size": 128, "symmetric": True},
]


def spec_error(variants=None, **extra) -> str:
    data = {**BASE, "variants": variants or [{"name": "fp32", "precision": "fp32"}], **extra}
    with pytest.raises(SpecError) as err:
        parse_spec(data, "spec.yaml")
    return str(err.value)


def test_spec_accepts_the_issue_example_with_defaults_resolved():
    spec = parse_spec({**BASE, "variants": DEMO_VARIANTS})
    resolved = {v.name: v.resolved().knobs() for v in spec.variants}
    assert resolved["fp32"] == {"name": "fp32", "precision": "fp32", "method": "builder"}
    assert resolved["int8"]["method"] == "rtn" and resolved["int8"]["block_size"] == 128
    assert resolved["int4-b32"] == {
        "name": "int4-b32", "precision": "int4", "method": "builder", "block_size": 32, "symmetric": False,
        "accuracy_level": 4, "algorithm": "default", "quantize_embeddings": False, "nodes_to_exclude": [],
    }
    assert resolved["int4-b128"]["symmetric"] is True


def test_spec_rejects_unknown_precision_naming_allowed_values():
    msg = spec_error([{"name": "a", "precision": "int3"}])
    assert msg == "spec.yaml: variants[0].precision: Input should be 'fp32', 'int8' or 'int4' (got 'int3')"


def test_spec_rejects_block_size_outside_allowed():
    msg = spec_error([{"name": "a", "precision": "int4", "block_size": 100}])
    assert msg == "spec.yaml: variants[0].block_size: Input should be 16, 32, 64, 128 or 256 (got 100)"


def test_spec_rejects_two_variants_with_one_name():
    msg = spec_error([{"name": "a", "precision": "fp32"}, {"name": "A", "precision": "int4"}])
    assert msg == "spec.yaml: variants: two variants are named 'A'; each name must be unique"


@pytest.mark.parametrize("name", ["has space", "-dash-first", "a/b", "x" * 65, "colon:1"])
def test_spec_rejects_names_that_cannot_be_foundry_ids(name):
    msg = spec_error([{"name": name, "precision": "fp32"}])
    assert msg.startswith(f"spec.yaml: variants[0].name: variant name {name!r} cannot be a Foundry Local id; allowed:")


def test_spec_rejects_bad_model_name():
    with pytest.raises(SpecError, match=r"model.name: model name 'my model' cannot be a Foundry Local id"):
        parse_spec({"model": {"path": "m", "name": "my model"}, "variants": [{"name": "a", "precision": "fp32"}]})


def test_spec_rejects_knobs_that_do_not_apply():
    assert spec_error([{"name": "a", "precision": "fp32", "block_size": 32}]).endswith(
        "variants[0]: block_size does not apply to fp32 with method 'builder'")
    assert spec_error([{"name": "a", "precision": "int8", "method": "rtn", "algorithm": "rtn"}]).endswith(
        "variants[0]: algorithm does not apply to int8 with method 'rtn'")
    assert spec_error([{"name": "a", "precision": "int8", "method": "builder"}]).endswith(
        "variants[0]: method 'builder' cannot make int8; allowed: rtn, dynamic")


def test_spec_rejects_unknown_fields_and_missing_ones():
    assert spec_error([{"name": "a", "precision": "int4", "blocksize": 32}]) == (
        "spec.yaml: variants[0].blocksize: unknown field (got 32)")
    with pytest.raises(SpecError, match=r"^spec.yaml: variants: Field required$"):
        parse_spec(BASE, "spec.yaml")


def test_load_spec_reports_invalid_yaml_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {path: m, name: x\nvariants: [\n")
    with pytest.raises(SpecError, match=rf"^{bad}: invalid YAML at line \d+, column \d+: "):
        load_spec(bad)


def test_load_spec_reports_a_missing_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec: No such file or directory"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    assert load_spec(path).variants


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_passes_the_preflight_on_the_demo_model(path, demo_model, tmp_path):
    """What the pre-flight refuses (a block size the model's widths do not take, sharing on an untied model) would
    make an example fail on the model it names; every example is run on the demo model by `slmops sweep`."""
    spec = with_model_path(load_spec(path), demo_model)
    assert preflight(spec, Workspace.of(tmp_path / "out", tmp_path / "work")).dataset is not None


def test_the_demo_sweeps_configs_demo_yaml_with_its_own_model():
    from slmops.demo import demo_spec

    spec = load_spec(ROOT / "configs" / "demo.yaml")
    assert [v.model_dump(exclude_defaults=True) for v in spec.variants] == DEMO_VARIANTS
    demo = demo_spec(Path("elsewhere/demo-model"))
    assert demo.model.path == Path("elsewhere/demo-model")
    assert demo.model_dump(exclude={"model"}) == spec.model_dump(exclude={"model"})


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "policies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_policy_is_valid(path):
    from slmops.config import load_policy

    assert load_policy(path).objective


def test_tutorial_config_has_the_tutorial_options():
    (variant,) = load_spec(ROOT / "configs" / "tutorial-int4.yaml").variants
    resolved = variant.resolved().knobs()
    assert (resolved["precision"], resolved["method"], resolved["block_size"], resolved["symmetric"]) == (
        "int4", "builder", 128, False)


def test_spec_rejects_an_unknown_execution_mode():
    msg = spec_error(execution={"variants_on": "cluster"})
    assert msg == "spec.yaml: execution.variants_on: Input should be 'inline' or 'workers' (got 'cluster')"
