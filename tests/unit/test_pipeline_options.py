"""CachedViewsOptions: one view per options class, which reads and writes what every other view does."""

from __future__ import annotations

import copy

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, StandardOptions, TypeOptions

from beam_pipeline.curation.pipeline_options import CachedViewsOptions

ARGV = ["--runner=DirectRunner", "--experiments=a", "--no_pipeline_type_check"]


def test_a_view_is_made_once_and_stays_live():
    options = CachedViewsOptions(ARGV)
    view = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is view and options.view_as(TypeOptions) is not view
    view.runner = "Elsewhere"  # written through one view, read through another and the whole
    assert options.view_as(StandardOptions).runner == "Elsewhere"
    assert options.get_all_options()["runner"] == "Elsewhere"
    assert options.view_as(TypeOptions).pipeline_type_check is False
    assert options.get_all_options() | {"runner": "DirectRunner"} == PipelineOptions(ARGV).get_all_options()


def test_a_deep_copy_has_views_of_its_own():
    """Beam's Pipeline deep-copies its options: the copy's views must be the copy's."""
    options = CachedViewsOptions(ARGV)
    options.view_as(DebugOptions)  # cached before the copy
    copied = copy.deepcopy(options)
    copied.view_as(DebugOptions).experiments.append("b")
    assert copied.view_as(DebugOptions).experiments == ["a", "b"]
    assert options.view_as(DebugOptions).experiments == ["a"]
    copied.view_as(StandardOptions).runner = "Elsewhere"
    assert options.view_as(StandardOptions).runner == "DirectRunner"


def test_a_pipeline_built_with_it_is_the_same_graph():
    def graph(options):
        pipeline = beam.Pipeline(options=options)
        _ = pipeline | beam.Create([1, 2]) | "Double" >> beam.Map(lambda x: 2 * x) | beam.combiners.Count.Globally()
        transforms = pipeline.to_runner_api().components.transforms.values()
        return sorted((t.unique_name, t.spec.urn) for t in transforms)

    assert graph(CachedViewsOptions(ARGV)) == graph(PipelineOptions(ARGV))


def test_a_dataflow_run_says_submitted_and_a_dry_run_says_nothing_was():
    from beam_pipeline.curation.runners import submitted_line

    real = PipelineOptions(["--runner=DataflowRunner", "--project=p"])
    assert submitted_line(real, "gs://b/out") == "submitted to DataflowRunner; stats.json in gs://b/out marks its end"
    dry = PipelineOptions(["--runner=DataflowRunner", "--dry_run=True"])
    assert (
        submitted_line(dry, "gs://b/out") == "dry run: the job was translated for DataflowRunner; nothing was submitted"
    )
