"""The run's Beam pipeline options, with views made once per options class.

Beam asks the pipeline's options for a view (`view_as(TypeOptions)` and the like)
several times per transform it applies, and every call builds the view anew: a
fresh argparse parser for that options class, then a parse of the whole command
line. For the curation's ~240 transforms that was ~0.3-0.5 s of the launcher's
~0.6-0.7 s of pipeline construction (benchmarks/stage_times, 2026-12-01), on the
path before any worker starts. A view holds no values of its own (it reads and
writes the options' shared `_all_options`), so one view per class serves every
caller alike.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


class CachedViewsOptions(PipelineOptions):
    """PipelineOptions whose `view_as(cls)` returns the same view of `cls` every time."""

    def view_as(self, cls):
        # Through __dict__: PipelineOptions' __setattr__ accepts only option names.
        views = self.__dict__.setdefault("_cached_views", {})
        view = views.get(cls)
        if view is None or view._all_options is not self._all_options:
            view = views[cls] = super().view_as(cls)
        return view
