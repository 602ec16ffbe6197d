"""The curation run behind `python -m beam_pipeline.curate`, one concern a module.

options (beam_pipeline.options) -> config.prepare (inputs, checks: no side effects)
-> outputs.clear_outputs (the only code that deletes) -> graph.build_curation (the
chain of stages) on runners.make_runner -> summary. curate.run calls them in that order.
"""
