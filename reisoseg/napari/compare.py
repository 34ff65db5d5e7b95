"""What the Compare widget does: an objects layer against a reference, with the metrics of `reisoseg evaluate`
and a layer that shows the false, missed, merged and split objects."""
from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from reisoseg.errors import ReIsoSegError
from reisoseg.evaluation.instances import Overlap, overlap_metrics
from reisoseg.napari.layers import LayerData, layer_data, layer_scores, layer_spacing

# error layer values: the kind of error, drawn on the objects it concerns (prediction's, or the reference's for
# missed and split objects); later kinds are drawn over earlier ones
ERROR_KINDS = {"missed_objects": (1, "missed", "#ffd92f"), "splits": (2, "split", "#66c2a5"),
               "false_objects": (3, "false", "#fc4e2a"), "merges": (4, "merged", "#e7298a")}


def compare_layers(prediction: Any, reference: Any) -> tuple[dict[str, float], LayerData]:
    """F1@0.5, AP-75 (by the objects' scores), the error counts, and the errors layer of two Labels layers."""
    predicted, truth = np.asarray(prediction.data), np.asarray(reference.data)
    if predicted.shape != truth.shape:
        raise ReIsoSegError(f"{prediction.name} {predicted.shape} and {reference.name} {truth.shape}: the layers "
                            f"must have the same shape")
    if not np.allclose(layer_spacing(prediction), layer_spacing(reference)):
        raise ReIsoSegError(f"{prediction.name} and {reference.name}: the layers have different scales "
                            f"{layer_spacing(prediction)} and {layer_spacing(reference)}")
    overlap = Overlap.of(truth, predicted)
    metrics = overlap_metrics(overlap, layer_scores(prediction))
    errors = np.zeros(predicted.shape, np.uint8)
    error_ids = overlap.error_objects()
    for kind, (value, _, _) in ERROR_KINDS.items():
        on_reference = kind in ("missed_objects", "splits")
        originals = (overlap.ref_original if on_reference else overlap.pred_original)[error_ids[kind] - 1]
        errors[np.isin(truth if on_reference else predicted, originals)] = value
    colormap = DirectLabelColormap(color_dict={None: np.zeros(4), 0: np.zeros(4),
                                               **{value: colour for value, _, colour in ERROR_KINDS.values()}})
    return metrics, layer_data(errors, layer_spacing(prediction), f"{prediction.name} errors", "labels",
                               colormap=colormap, features={"index": [v for v, _, _ in ERROR_KINDS.values()],
                                                            "error": [n for _, n, _ in ERROR_KINDS.values()]})


def metrics_text(metrics: dict[str, float]) -> str:
    """The numbers a proofreader looks at first, on a few lines."""
    return (f"F1@0.5 {metrics['f1_50']:.3f}   AP-75 {metrics['ap_75']:.3f}\n"
            f"objects {int(metrics['predicted_instances'])} (reference {int(metrics['reference_instances'])})\n"
            f"false {int(metrics['false_objects'])}   missed {int(metrics['missed_objects'])}   "
            f"merged {int(metrics['merges'])}   split {int(metrics['splits'])}")
