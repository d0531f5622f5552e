"""Fuzzing a run folder: whatever a hostile or broken results.json, misclassified.json, checkpoint
or test-set IDX header holds, `normlab report` either rebuilds the report (exit 0) or says why
not in one line (exit 2, no traceback), and a refusal leaves every file of the folder as it was."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import finished_compare, run_cli

pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 12)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate])   # no shrinking: each example is a report
ODD_VALUES = st.sampled_from([None, -1, 0, 10**30, 5.5, float("inf"), "x", "", [], {}, [1, 2], {"a": 1}, True])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_compare(tmp_path_factory.mktemp("fuzzed"), n_train=128)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def paths(value, prefix=()):
    """Every place inside a JSON value: (keys...) tuples."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


def replaced(value, where, new, delete: bool):
    if not where:
        return new
    value = json.loads(json.dumps(value))
    parent = value
    for key in where[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = new
    return value


def report_says_one_line_or_works(run: Path, data: Path, capsys, changed: str):
    before = snapshot(run)
    capsys.readouterr()
    code = run_cli("report", run, "--data-dir", data)
    err = capsys.readouterr().err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert snapshot(run) == before, f"a refused report changed the folder ({changed})"


def fresh(finished, tmp_path_factory) -> tuple[Path, Path]:
    data, out = finished
    copy = tmp_path_factory.mktemp("case")
    shutil.copytree(out, copy / "run")
    shutil.copytree(data, copy / "mnist")
    return copy / "mnist", copy / "run"


@FUZZ
@given(name=st.sampled_from(["results.json", "misclassified.json"]), pick=st.integers(0, 10**6), new=ODD_VALUES,
       delete=st.booleans())
def test_mutated_json(finished, tmp_path_factory, capsys, name, pick, new, delete):
    data, run = fresh(finished, tmp_path_factory)
    value = json.loads((run / name).read_text())
    places = list(paths(value))
    where = places[pick % len(places)]
    (run / name).write_text(json.dumps(replaced(value, where, new, delete)))
    report_says_one_line_or_works(run, data, capsys, f"{name} {where} -> {new!r}")


@FUZZ
@given(changes=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(1, 4000))
def test_mutated_checkpoint(finished, tmp_path_factory, capsys, changes, cut):
    data, run = fresh(finished, tmp_path_factory)
    (run / "misclassified.json").unlink()               # so the report must read the checkpoints again
    path = run / "checkpoints" / "gn2-seed1.pt"
    raw = bytearray(path.read_bytes())
    for position, byte in changes:
        raw[position % len(raw)] = byte
    path.write_bytes(bytes(raw[:cut] if cut else raw))
    report_says_one_line_or_works(run, data, capsys, f"checkpoint {changes} cut {cut}")


@FUZZ
@given(changes=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_test_set_header(finished, tmp_path_factory, capsys, changes):
    data, run = fresh(finished, tmp_path_factory)
    path = data / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    for position, byte in changes:
        raw[position] = byte
    path.write_bytes(gzip.compress(bytes(raw)))
    report_says_one_line_or_works(run, data, capsys, f"IDX header {changes}")
