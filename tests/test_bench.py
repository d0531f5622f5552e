"""`normlab bench` measures what it says: both pipelines run, on the data it names."""

import json

from conftest import run_cli


def bench_json(capsys, *args) -> dict:
    code = run_cli("bench", "--json", "--steps", "2", "--windows", "1", *args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_bench_times_both_pipelines_on_the_real_files(capsys, fashion_dir):
    result = bench_json(capsys, "--dataset", "fashion-mnist", "--data-dir", fashion_dir, "--variants", "bn,gn:2",
                        "--reference-workers", "0")
    assert str(fashion_dir) in result["data"]
    assert [r["variant"] for r in result["variants"]] == ["bn", "gn:2"]
    for row in result["variants"]:
        assert row["normlab_images_per_s"] > 0 and row["reference_images_per_s"]["workers=0"] > 0
        assert row["speedup_vs_best_reference"] == round(row["normlab_images_per_s"] / row["reference_images_per_s"]["workers=0"], 2)
        assert row["normlab_epoch_seconds"] > 0 and row["params"] == 19_378
    assert set(result["slowdown_vs_bn"]) == {"gn:2"}


def test_bench_without_the_data_times_random_images_of_its_shape_and_says_so(capsys):
    result = bench_json(capsys, "--dataset", "cifar10", "--variants", "ln", "--reference-workers", "0,1", "--nchw")
    assert result["data"].startswith("synthetic")
    assert result["variants"][0]["other_layout_images_per_s"] > 0 and result["variants"][0]["layout"] == "channels_last"
    assert set(result["variants"][0]["reference_images_per_s"]) == {"workers=0", "workers=1"}
    assert "slowdown_vs_bn" not in result


def test_bench_of_bn_alone_prints_no_empty_comparison(capsys):
    assert run_cli("bench", "--dataset", "mnist", "--variants", "bn", "--steps", "2", "--windows", "1", "--reference-workers", "0") == 0
    out = capsys.readouterr().out
    assert out.startswith("normlab bench: mnist") and "relative to bn" not in out


def test_bench_full_job_trains_every_variant_through_train_run(capsys, fashion_dir):
    result = bench_json(capsys, "--dataset", "fashion-mnist", "--data-dir", fashion_dir, "--variants", "bn,ln",
                        "--reference-workers", "0", "--full", "--epochs", "1")
    job = result["full_job"]
    assert [r["variant"] for r in job["runs"]] == ["bn", "ln"] and job["epochs"] == 1
    assert all(0 <= r["test_acc"] <= 100 and r["seconds"] > 0 for r in job["runs"])


def test_bench_full_job_without_data_is_a_clear_error(capsys):
    assert run_cli("bench", "--dataset", "cifar10", "--full", "--steps", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "not found" in err and "\n" not in err


def test_bench_bad_options_are_one_line_errors(capsys):
    for args in (["--steps", "0"], ["--variants", "gn:3"], ["--reference-workers", "a,b"], ["--batch-size", "1"]):
        assert run_cli("bench", *args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err and "Traceback" not in err, (args, err)


def test_bench_times_a_folder_of_your_own_images_not_random_ones(capsys, tmp_path):
    from test_own_images import make_image_folder
    folder = tmp_path / "pets"
    make_image_folder(folder, per_class=8)
    result = bench_json(capsys, "--dataset", folder, "--variants", "bn", "--reference-workers", "0", "--batch-size", "8")
    assert not result["data"].startswith("synthetic") and str(folder) in result["data"]


def test_a_batch_larger_than_the_data_is_refused_before_timing(capsys):
    assert run_cli("bench", "--dataset", "mnist", "--batch-size", "100000", "--steps", "1", "--windows", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "--batch-size 100000 exceeds the 10,000 training images" in err and "\n" not in err, err
