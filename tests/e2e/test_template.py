"""The Dataflow Flex Template in templates/: parameters, image recipe, launcher, script.

No Docker engine and no Google Cloud here: the image is checked as text against
requirements.txt and the install the project documents, the launch is simulated the way
the template launcher runs templates/main.py (its flags, plus --dry_run=True), and the
gcloud commands of templates/flex_template.sh are printed (DRY_RUN=1), not run.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib.util
import io
import json
import logging
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from beam_pipeline.option_checks import HANDOFFS
from beam_pipeline.options import (
    UsageError,
    add_curation_arguments,
    parse_curation_args,
)
from helpers import REPO
from transforms.formats.layout import FORMATS, PRESETS

TEMPLATES = REPO / "templates"

# A value for every parameter, in the form the launcher passes it (--name=value).
SAMPLE_VALUES = {
    "input": "gs://bucket/pool/*.parquet",
    "input_format": "parquet",
    "input_preset": "img2dataset",
    "text_field": "caption",
    "key_field": "id",
    "url_field": "URL",
    "column_names": "caption,url",
    "max_text_bytes": "4096",
    "metadata": "gs://bucket/metadata.json",
    "threshold": "20000",
    "seed": "7",
    "output_dir": "gs://bucket/curated/run-1",
    "overwrite": "true",
    "num_shards": "16",
    "batch_size": "2048",
    "handoff": "datacomp,img2dataset",
    "reshard_dir": "gs://bucket/resharded/run-1",
    "samples_per_shard": "5000",
    "strict": "false",
    "mode": "metaclip2",
    "matcher": "pyahocorasick",
    "lang_field": "lang",
    "language_id": "none",
    "language_map": "zh-cn=zh,zh-tw=zh",
    "default_language": "other",
    "report": "true",
    "progress": "0",
    "cache_dir": "none",
    "target_size": "400000000",
    "recipe": "datacomp-1b",
    "filter": "basic,text,clip_score,image",
    "balance": "metaclip",
    "lid_model": "gs://bucket/lid.176.bin",
    "width_field": "original_width",
    "height_field": "original_height",
    "imagenet_wnids": "gs://bucket/imagenet21k_wnids.txt",
    "clip_score_field": "clip_l14_similarity_score",
    "clip_score_fraction": "0.3",
    "clip_score_threshold": "0.25",
    "embeddings": "npz",
    "image_embedding_key": "l14_img",
    "text_embedding_key": "l14_txt",
    "centroids": "gs://bucket/l14_centroids.npy",
    "target_clusters": "gs://bucket/in1k_clusters.txt",
    "allow_uids": "gs://bucket/datacomp_1b_uids.npy",
    "deny_uids": "gs://bucket/eval_set_uids.txt",
    "where": "aesthetic > 7",
    "per_image": "false",
    "extra_text_fields": "rewrite_1,rewrite_2",
    "extra_texts": "gs://bucket/rewrites/*.jsonl",
    "select": "covariance",
    "select_fraction": "0.5",
    "class_embeddings": "gs://bucket/classes_l14.npy",
    "max_class_size": "20000",
    "dedup": "url,text,semantic",
    "semdedup_centroids": "gs://bucket/semdedup_centroids.npy",
    "semdedup_clusters": "1000",
    "semdedup_iterations": "20",
    "semdedup_eps": "0.01",
    "semdedup_keep": "hard",
    "max_cluster_size": "50000",
}
# Parameters that only mean something with --filter (dropped with it in the optionality test).
FILTER_ONLY = {"lid_model", "imagenet_wnids", "clip_score_fraction", "centroids", "target_clusters"}
SELECT_ONLY = {"select_fraction", "class_embeddings"}
# With --dedup semantic: centroids given or fitted, so dropping one of these drops them all.
DEDUP_ONLY = {"semdedup_clusters", "semdedup_iterations", "semdedup_eps", "semdedup_keep", "max_cluster_size"}


def curation_options() -> dict[str, argparse.Action]:
    """The pipeline's own options, name (without --) -> argparse action."""
    parser = argparse.ArgumentParser(add_help=False)
    add_curation_arguments(parser)
    return {
        option[2:]: action for action in parser._actions for option in action.option_strings if option.startswith("--")
    }


def template_parameters() -> list[dict]:
    return json.loads((TEMPLATES / "metadata.json").read_text(encoding="utf-8"))["parameters"]


def launcher_args(values: dict[str, str]) -> list[str]:
    return [f"--{name}={value}" for name, value in sorted(values.items())]


def test_template_parameters_are_exactly_the_curation_options():
    names = [parameter["name"] for parameter in template_parameters()]
    assert len(names) == len(set(names)), "a parameter is declared twice"
    options = set(curation_options())
    assert set(names) - options == set(), "metadata.json declares parameters the pipeline does not define"
    assert options - set(names) == set(), "the pipeline has options that templates/metadata.json lacks"
    assert set(SAMPLE_VALUES) == options, "tests/e2e/test_template.py needs a sample value for each option"


def test_parameter_texts_and_value_checks():
    parameters = {parameter["name"]: parameter for parameter in template_parameters()}
    options = curation_options()
    for name, parameter in parameters.items():
        assert parameter.get("label") and parameter.get("helpText"), f"{name}: label and helpText are required"
        for regex in parameter.get("regexes", []):
            assert re.fullmatch(regex, SAMPLE_VALUES[name]), f"{name}: {regex} refuses {SAMPLE_VALUES[name]!r}"
            default = options[name].default
            if isinstance(default, str):
                assert re.fullmatch(regex, default), f"{name}: {regex} refuses the option's default {default!r}"
    (format_regex,) = parameters["input_format"]["regexes"]
    assert format_regex == "^(" + "|".join(FORMATS) + ")$", (
        "input_format must offer exactly transforms.formats.layout.FORMATS"
    )
    (preset_regex,) = parameters["input_preset"]["regexes"]
    assert preset_regex == "^(" + "|".join(PRESETS) + ")$", (
        "input_preset must offer exactly transforms.formats.layout.PRESETS"
    )
    (handoff_regex,) = parameters["handoff"]["regexes"]
    handoffs = HANDOFFS
    for name in handoffs:
        assert re.fullmatch(handoff_regex, name) and re.fullmatch(handoff_regex, f"{name},{handoffs[0]}"), name
    assert not re.fullmatch(handoff_regex, "webdataset,bogus")
    # Workers cannot read the launcher's disk: paths must name a remote filesystem.
    for name in ("input", "metadata", "output_dir", "reshard_dir"):
        assert not any(re.fullmatch(regex, "/data/pool.jsonl") for regex in parameters[name]["regexes"]), name


def test_optional_parameters_are_the_ones_the_pipeline_can_do_without():
    """The launcher's form of every parameter parses; leaving one out fails iff it is required."""
    # target_size is refused with mode metaclip2, which the sample values pick; the recipe
    # implies balance none, and clip_score takes a fraction or a threshold, not both.
    skipped = ("overwrite", "target_size", "recipe", "clip_score_threshold", "semdedup_centroids")
    values = {name: value for name, value in SAMPLE_VALUES.items() if name not in skipped}
    args, beam_args = parse_curation_args(launcher_args(values))
    assert (args.input, args.metadata, args.threshold, args.column_names) == (
        (SAMPLE_VALUES["input"],),
        SAMPLE_VALUES["metadata"],
        20000,
        ("caption", "url"),
    )
    assert beam_args == []
    for parameter in template_parameters():
        name = parameter["name"]
        # Without mode (metaclip1), the metaclip2-only options must go too.
        gone = {name} | ({"lang_field", "language_id", "language_map"} if name == "mode" else set())
        # A filter's assets are optional with the filters that need them.
        gone |= FILTER_ONLY | {"filter"} if name in FILTER_ONLY | {"filter"} else set()
        gone |= SELECT_ONLY | {"select"} if name in SELECT_ONLY | {"select"} else set()
        gone |= DEDUP_ONLY | {"dedup"} if name in DEDUP_ONLY | {"dedup"} else set()
        rest = {other: value for other, value in values.items() if other not in gone}
        try:
            parse_curation_args(launcher_args(rest))
            required = False
        except UsageError:
            required = True
        assert parameter["isOptional"] is not required, (
            f"{name}: isOptional is {parameter['isOptional']}, the pipeline says required={required}"
        )


def test_overwrite_parameter_in_the_launchers_form():
    base = {name: SAMPLE_VALUES[name] for name in ("input", "metadata", "output_dir")}
    for value, expected in (("true", True), ("false", False)):
        try:
            args, _ = parse_curation_args(launcher_args({**base, "overwrite": value}))
        except UsageError as error:
            raise AssertionError(f"--overwrite={value}: {error}") from None
        assert args.overwrite is expected
    args, _ = parse_curation_args(launcher_args(base) + ["--overwrite"])  # the command line's form stays
    assert args.overwrite is True


# --- the image -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of templates/Dockerfile, continuation lines joined."""
    text = (TEMPLATES / "Dockerfile").read_text()
    lines = [
        line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def dockerfile_args() -> dict[str, str]:
    return dict(value.split("=", 1) for kind, value in dockerfile_instructions() if kind == "ARG" and "=" in value)


def pinned_beam_version() -> str:
    (pin,) = re.findall(
        r"^apache-beam(?:\[[^\]]*\])?==(\S+)\s*$", (REPO / "requirements.txt").read_text(), re.MULTILINE
    )
    return pin


def test_dockerfile_beam_version_equals_requirements():
    args = dockerfile_args()
    assert args["BEAM_VERSION"] == pinned_beam_version()
    froms = [value for kind, value in dockerfile_instructions() if kind == "FROM"]
    assert "apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in froms, froms
    assert not any(re.search(r"beam_python[\d.]+_sdk:\d", value) for value in froms), (
        "a hard-coded Beam version in FROM"
    )
    # Launcher and workers are one image: the launcher base must be of the same Python.
    assert f"python{args['PYTHON_VERSION'].replace('.', '')}-template-launcher-base" in args["LAUNCHER_IMAGE"]


def pip_installs(commands: str) -> list[str]:
    """The `pip install` commands in a shell text, in order."""
    return [match.group(0) for match in re.finditer(r"pip install[^&;\n]*", commands)]


def installs_requirements_then_package(installs: list[str]) -> bool:
    requirements = [i for i, command in enumerate(installs) if re.search(r"-r\s+requirements\.txt", command)]
    package = [i for i, command in enumerate(installs) if re.search(r"(\s|^)(-e\s+)?\.(\s|$)", command + " ")]
    return bool(requirements and package) and requirements[0] < package[0]


def test_dockerfile_installs_the_package_the_way_the_project_documents():
    runs = " && ".join(value for kind, value in dockerfile_instructions() if kind == "RUN")
    installs = pip_installs(runs)
    assert installs_requirements_then_package(installs), installs
    (package_install,) = [command for command in installs if re.search(r"\s\.$", command.strip())]
    assert "--no-deps" in package_install, "the package's dependencies come from requirements.txt only"
    documented = {"Makefile": (REPO / "Makefile").read_text()}
    if (REPO / "README.md").exists():
        documented["README.md"] = (REPO / "README.md").read_text()
    for name, text in documented.items():
        if pip_installs(text):
            assert installs_requirements_then_package(pip_installs(text)), f"{name} installs in another order"


def test_dockerfile_copies_what_setup_py_needs_and_runs_main_py():
    instructions = dockerfile_instructions()
    copied = []
    for kind, value in instructions:
        if kind == "COPY" and not value.startswith("--from"):
            copied += shlex.split(value)[:-1]
    for needed in ("setup.py", "requirements.txt", "MANIFEST.in", "beam_pipeline", "transforms", "templates/main.py"):
        assert needed in copied, f"the image does not copy {needed}"
    env = dict(value.split("=", 1) for kind, value in instructions if kind == "ENV")
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"].strip('"') == "/template/main.py"
    assert ("WORKDIR", "/template") in instructions and ("COPY", "templates/main.py ./main.py") in instructions
    assert not {"FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE", "FLEX_TEMPLATE_PYTHON_SETUP_FILE"} & set(env), (
        "a launch would reinstall"
    )
    assert instructions[-1] == ("ENTRYPOINT", '["/opt/apache/beam/boot"]'), "the image must start as an SDK worker"
    # The build context filter beside the Dockerfile lets every copied path through.
    allowed = [
        line[1:] for line in (TEMPLATES / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    for source in copied:
        files = [str(p.relative_to(REPO)) for p in REPO.glob(source)] if "[" in source else [source]
        for path in files:
            inside = (
                [str(p.relative_to(REPO)) for p in (REPO / path).rglob("*.py")] if (REPO / path).is_dir() else [path]
            )
            for file in inside:
                assert any(fnmatch.fnmatch(file, pattern) for pattern in allowed), (
                    f"{file} is filtered out of the build context"
                )


# --- the launch --------------------------------------------------------------------------------


def load_main_py():
    spec = importlib.util.spec_from_file_location("balancebeam_template_main", TEMPLATES / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_defaults_never_override_explicit_flags():
    launcher_argv = load_main_py().launcher_argv
    image = "us-central1-docker.pkg.dev/p/r/balancebeam:abc"
    environ = {"BALANCEBEAM_SDK_CONTAINER_IMAGE": image}
    assert launcher_argv(["--input=gs://b/x"], environ) == [
        "--input=gs://b/x",
        "--runner=DataflowRunner",
        f"--sdk_container_image={image}",
    ]
    assert launcher_argv(["--runner", "DirectRunner"], {}) == ["--runner", "DirectRunner"]
    assert launcher_argv(["--sdk_container_image=other"], environ) == [
        "--sdk_container_image=other",
        "--runner=DataflowRunner",
    ]


def remove_staging_directories(result) -> None:
    """The Dataflow stager's temporary directory (pickled main session ...) is ours to remove."""
    from apache_beam.portability.api import beam_runner_api_pb2

    for environment in result.job.proto_pipeline.components.environments.values():
        for artifact in environment.dependencies:
            directory = Path(beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path).parent
            if directory.parent == Path(tempfile.gettempdir()) and directory.name.startswith("tmp"):
                shutil.rmtree(directory, ignore_errors=True)


def test_a_flex_template_launch_submits_the_job_and_returns(tmp_path, monkeypatch):
    """templates/main.py run as the launcher runs it; --dry_run=True stands in for the service."""
    from apache_beam.options.pipeline_options import StandardOptions, WorkerOptions
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    (tmp_path / "pool.jsonl").write_text('{"key": "a", "text": "a red car"}\n', encoding="utf-8")
    (tmp_path / "metadata.json").write_text('["red car", "car"]', encoding="utf-8")
    image = "us-central1-docker.pkg.dev/dummy-project/balancebeam/balancebeam:test"
    # The launcher's own flags (sorted, as it passes them), then the job's parameters.
    argv = [
        "--job_name=balancebeam-test",
        "--project=dummy-project",
        "--region=us-central1",
        "--staging_location=gs://dummy-bucket/staging",
        "--temp_location=gs://dummy-bucket/tmp",
        "--template_location=gs://dummy-bucket/staging/template_launches/job_object",
        "--dry_run=True",
        f"--input={tmp_path / 'pool.jsonl'}",
        f"--metadata={tmp_path / 'metadata.json'}",
        f"--output_dir={tmp_path / 'out'}",
        "--threshold=2",
    ]
    submitted = []
    submit = DataflowRunner.run_pipeline

    def record_and_forbid_waiting(self, pipeline, options):
        result = submit(self, pipeline, options)
        submitted.append(options)
        remove_staging_directories(result)

        def wait_until_finish(duration=None):
            raise AssertionError("the launch waited for the job")

        result.wait_until_finish = wait_until_finish
        return result

    monkeypatch.setattr(DataflowRunner, "run_pipeline", record_and_forbid_waiting)
    monkeypatch.setenv("BALANCEBEAM_SDK_CONTAINER_IMAGE", image)
    monkeypatch.setattr(sys, "argv", [str(TEMPLATES / "main.py"), *argv])
    printed = io.StringIO()
    root_level = logging.getLogger().level  # curate.main() sets it to WARNING
    try:
        with pytest.raises(SystemExit) as exit_status, contextlib.redirect_stdout(printed):
            runpy.run_path(str(TEMPLATES / "main.py"), run_name="__main__")
    finally:
        logging.getLogger().setLevel(root_level)
    assert exit_status.value.code == 0
    assert "translated for DataflowRunner; nothing was submitted" in printed.getvalue()
    (options,) = submitted
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(WorkerOptions).sdk_container_image == image
    assert not (tmp_path / "out" / "stats.json").exists()


# --- the script --------------------------------------------------------------------------------


def flex_template_sh(*args: str, **settings: str) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if key not in ("PROJECT", "REGION", "BUCKET", "TAG")}
    environ.update(DRY_RUN="1", **settings)
    return subprocess.run(
        ["bash", str(TEMPLATES / "flex_template.sh"), *args], capture_output=True, text=True, env=environ, timeout=60
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_flex_template_script_prints_the_gcloud_commands():
    settings = dict(PROJECT="my-project", REGION="us-central1", BUCKET="my-bucket", TAG="t1")
    image = "us-central1-docker.pkg.dev/my-project/balancebeam/balancebeam:t1"
    template = "gs://my-bucket/templates/balancebeam-t1.json"

    built = flex_template_sh("image", **settings)
    assert built.returncode == 0, built.stderr
    assert shlex.split(built.stdout)[:3] == ["gcloud", "builds", "submit"] and f"_IMAGE={image}" in built.stdout
    assert "templates/cloudbuild.yaml" in built.stdout

    spec = flex_template_sh("build", **settings)
    assert spec.returncode == 0, spec.stderr
    words = shlex.split(spec.stdout)
    assert words[:5] == ["gcloud", "dataflow", "flex-template", "build", template]
    assert words[words.index("--image") + 1] == image
    assert words[words.index("--metadata-file") + 1] == "templates/metadata.json"
    assert words[words.index("--sdk-language") + 1] == "PYTHON"

    missing = flex_template_sh("run", **settings)
    assert missing.returncode == 2 and "INPUT" in missing.stderr

    job = flex_template_sh(
        "run",
        "--parameters",
        "overwrite=true",
        INPUT="gs://my-bucket/pool/*.parquet",
        METADATA="gs://my-bucket/metadata.json",
        OUTPUT_DIR="gs://my-bucket/out",
        **settings,
    )
    assert job.returncode == 0, job.stderr
    words = shlex.split(job.stdout)
    assert words[:4] == ["gcloud", "dataflow", "flex-template", "run"]
    assert words[words.index("--template-file-gcs-location") + 1] == template
    parameters = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--parameters")
    assert parameters["input"] == "gs://my-bucket/pool/*.parquet" and parameters["sdk_container_image"] == image
    declared = {parameter["name"] for parameter in template_parameters()}
    assert set(parameters) - declared == {"sdk_container_image"}, (
        "the script passes a parameter the template does not declare"
    )
