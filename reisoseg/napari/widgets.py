"""The Segment, Measure and Compare dock widgets (magicgui on Qt). They gather the inputs, run the Qt-free
functions of `segment`, `measure` and `compare` (segmentation in a worker thread) and show the results."""
from __future__ import annotations

import threading
from pathlib import Path

import napari
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Table,
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.segment import DEFAULT_BLOCK
from reisoseg.napari.compare import compare_layers, metrics_text
from reisoseg.napari.layers import add_layers
from reisoseg.napari.measure import cell_text, centre_on_object, export_csv, hide_objects, measure_layer
from reisoseg.napari.segment import SegmentRequest, default_model, default_output, segment_layer

TABLE_COLUMNS = ("id", "volume_um3", "surface_area_um2", "sections", "major_axis_nm", "score")


def napari_progress(total: int | None, description: str, unit: str, *, enabled: bool = True, initial: int = 0):
    """`reisoseg.console.progress_bar`'s interface on napari's activity dock."""
    return progress(total=total, desc=description, unit=unit, initial=initial, disable=not enabled)


def _numbers(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError as error:
        raise ReIsoSegError(f"{name}: expected whole numbers, got {text!r}") from error


class SegmentWidget(Container):
    """Segment an Image layer with a trained model: classes, objects and (optionally) probabilities as layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.model = FileEdit(mode="d", label="model folder", value=default_model() or "")
        self.folds = LineEdit(label="folds", value="0", tooltip="space-separated, or 'all'")
        self.tta = CheckBox(text="test-time mirroring", value=True)
        self.instances = CheckBox(text="objects (instance models)", value=True)
        self.probabilities = CheckBox(text="keep probabilities", value=False)
        self.block = LineEdit(label="block (z y x)", value=" ".join(map(str, DEFAULT_BLOCK)),
                              tooltip="voxels predicted at once; memory grows with it")
        self.output = FileEdit(mode="w", label="output (.zarr)", filter="*.zarr",
                               tooltip="empty: ~/reisoseg_napari/<layer>_seg.zarr; a cancelled run continues here")
        self.overwrite = CheckBox(text="overwrite output", value=False)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.extend([self.image, self.model, self.folds, self.tta, self.instances, self.probabilities, self.block,
                     self.output, self.overwrite, self.run_button, self.cancel_button])
        self.stop = threading.Event()
        self.worker = None
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.stop.set)

    def request(self) -> SegmentRequest:
        layer = self.image.value
        if layer is None:
            raise ReIsoSegError("choose an image layer")
        output = str(self.output.value)
        return SegmentRequest(
            model=self.model.value, output=default_output(layer.name) if output in ("", ".") else output,
            folds=self.folds.value.split() or None, tta=self.tta.value, instances=self.instances.value,
            probabilities=self.probabilities.value, block=_numbers(self.block.value, "block"),
            overwrite=self.overwrite.value)

    def start(self) -> None:
        try:
            request = self.request()
        except ReIsoSegError as error:
            show_error(str(error))
            return
        Path(request.output).parent.mkdir(parents=True, exist_ok=True)
        self.stop.clear()
        self.worker = create_worker(segment_layer, self.image.value, request, bar=napari_progress,
                                    should_stop=self.stop.is_set)
        self.worker.returned.connect(self.show)
        self.worker.errored.connect(lambda error: show_error(str(error)))
        self.worker.finished.connect(self.idle)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker.start()

    def show(self, layers: list) -> None:
        add_layers(self.viewer, layers)
        show_info(f"segmented {self.image.value.name}")

    def idle(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False


class MeasureWidget(Container):
    """Measure the objects of a Labels layer: a table (the layer's features), CSV export, a click to centre on an
    object, and objects below a score or a size hidden."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.objects = create_widget(annotation=napari.layers.Labels, label="objects")
        self.measure_button = PushButton(text="Measure")
        self.min_score = FloatSpinBox(label="hide score below", min=0.0, max=1.0, step=0.05, value=0.0)
        self.min_volume = FloatSpinBox(label="hide volume below (µm³)", min=0.0, max=1e6, step=0.001, value=0.0)
        self.table = Table(value={column: [] for column in TABLE_COLUMNS})
        self.csv = FileEdit(mode="w", label="CSV", filter="*.csv")
        self.export_button = PushButton(text="Export CSV")
        self.extend([self.objects, self.measure_button, self.min_score, self.min_volume, self.table, self.csv,
                     self.export_button])
        self.measure_button.changed.connect(self.measure)
        self.min_score.changed.connect(self.hide)
        self.min_volume.changed.connect(self.hide)
        self.export_button.changed.connect(self.export)
        self.table.native.cellClicked.connect(self.centre)

    def measure(self) -> None:
        layer = self.objects.value
        if layer is None:
            show_error("choose an objects layer")
            return
        try:
            table = measure_layer(layer)
        except ReIsoSegError as error:
            show_error(str(error))
            return
        self.table.value = {column: [cell_text(column, v) for v in table[column]] for column in TABLE_COLUMNS}
        self.hide()
        show_info(f"{layer.name}: {len(table)} objects")

    def hide(self) -> None:
        layer = self.objects.value
        if layer is not None and "id" in layer.features:
            hidden = hide_objects(layer, min_score=self.min_score.value, min_volume_um3=self.min_volume.value)
            self.min_score.tooltip = f"{hidden} objects hidden"

    def centre(self, row: int, _column: int = 0) -> None:
        centre_on_object(self.viewer, self.objects.value, int(self.table.data[row][0]))

    def export(self) -> None:
        path = str(self.csv.value)
        if path in ("", ".") or self.objects.value is None:
            show_error("choose an objects layer and a CSV file")
            return
        try:
            summary = export_csv(self.objects.value, path)
        except ReIsoSegError as error:
            show_error(str(error))
            return
        show_info(f"wrote {path}: {summary['objects']} objects")


class CompareWidget(Container):
    """An objects layer against a reference: F1@0.5, AP-75 and the errors, drawn in a layer of their own."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.prediction = create_widget(annotation=napari.layers.Labels, label="objects")
        self.reference = create_widget(annotation=napari.layers.Labels, label="reference")
        self.compare_button = PushButton(text="Compare")
        self.result = Label(value="")
        self.extend([self.prediction, self.reference, self.compare_button, self.result])
        self.compare_button.changed.connect(self.compare)

    def compare(self) -> None:
        if self.prediction.value is None or self.reference.value is None:
            show_error("choose an objects layer and a reference layer")
            return
        try:
            metrics, errors = compare_layers(self.prediction.value, self.reference.value)
        except ReIsoSegError as error:
            show_error(str(error))
            return
        self.result.value = metrics_text(metrics)
        add_layers(self.viewer, [errors])

