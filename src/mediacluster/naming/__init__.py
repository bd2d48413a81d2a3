"""Cluster names: WordNet lifting of ImageNet probabilities, CLIP zero-shot, and names a person
gave by hand (``names.yaml`` next to a run) or in the studio (one rule: ``load_names``)."""

from __future__ import annotations

from .overrides import (
    hand_level_names,
    level_names,
    level_names_sure,
    load_names,
    model_names,
    names_near,
    pipeline_names,
    pipeline_names_sure,
    run_level_names,
    save_names_template,
)
from .tables import cluster_lineage, cluster_table, named_assignments

__all__ = ["cluster_lineage", "cluster_table", "hand_level_names", "level_names", "level_names_sure", "load_names", "model_names", "named_assignments", "names_near", "pipeline_names",
           "pipeline_names_sure", "run_level_names", "save_names_template"]
