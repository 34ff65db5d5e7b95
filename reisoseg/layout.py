"""Names of the files and folders ReIsoSeg adds to nnU-Net v1's layout: one home each, importable without nnU-Net."""
from __future__ import annotations

TRAINER_SETTINGS_FILE = "reisoseg.json"  # beside a fold's checkpoints: what the trainer chose (ani_scale, patch, ...)
INSTANCES_FILE = "instances.json"  # beside a model (TRAINER__PLANS): how its classes encode objects
INSTANCES_KEY = "reisoseg_instances"  # the same settings in dataset.json, where training copies them from
INSTANCES_SUBFOLDER = "instances"  # predicted objects inside a prediction folder
ENGINE_LOG = "engine.log"  # nnU-Net's own messages, in a command's output folder
