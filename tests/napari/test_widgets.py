"""The three widgets in a real napari viewer (Qt; an X server from pytest-xvfb where Xvfb is installed, else Qt's
offscreen platform), each photographed on the sample data. REISOSEG_SCREENSHOTS=folder keeps the pictures (the
documentation's come from there)."""
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt", reason="pytest-qt is not installed (the test extra brings it)")

from reisoseg.napari.layers import add_layers  # noqa: E402
from reisoseg.napari.sample_data import synthetic_volume  # noqa: E402

try:
    from reisoseg.napari.widgets import CompareWidget, MeasureWidget, SegmentWidget
except ImportError as error:  # a Qt binding without its system libraries
    pytest.skip(f"Qt cannot be imported here: {error}", allow_module_level=True)


@pytest.fixture
def viewer(make_napari_viewer):
    try:
        viewer = make_napari_viewer()
    except Exception as error:  # Qt or OpenGL cannot start on this machine
        pytest.skip(f"napari's Qt viewer cannot start here: {type(error).__name__}: {error}")
    viewer.window.resize(1400, 900)
    add_layers(viewer, synthetic_volume())
    viewer.reset_view()
    return viewer


def photograph(viewer, name: str) -> np.ndarray:
    """A screenshot of the whole window; kept in REISOSEG_SCREENSHOTS when set."""
    picture = viewer.screenshot(canvas_only=False, flash=False)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert picture.ndim == 3 and picture[..., :3].std() > 10  # a real picture, not an empty window
    if os.environ.get("QT_QPA_PLATFORM") != "offscreen":  # Qt's offscreen platform draws no OpenGL canvas
        assert canvas[..., :3].std() > 10
    folder = os.environ.get("REISOSEG_SCREENSHOTS")
    if folder:
        import imageio.v3 as iio

        Path(folder).mkdir(parents=True, exist_ok=True)
        iio.imwrite(Path(folder) / f"napari_{name}.png", picture[..., :3])
    return picture


def test_segment_widget_adds_classes_and_objects(viewer, qtbot, trained_instances, tmp_path):
    _, model = trained_instances
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    image = viewer.layers["synthetic EM"]
    crop = viewer.add_image(image.data[:12, :96, :96], scale=image.scale, name="synthetic EM crop")  # a quick run
    widget.image.value = crop
    widget.model.value, widget.output.value = str(model), str(tmp_path / "synthetic_seg.zarr")
    widget.block.value = "12 48 48"
    widget.tta.value = False
    widget.start()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=240_000)
    objects = viewer.layers["synthetic_seg objects"]
    assert objects.data.shape == crop.data.shape and tuple(objects.scale) == tuple(crop.scale)
    assert "synthetic_seg classes" in viewer.layers
    photograph(viewer, "segment")


def test_measure_widget_fills_the_table_and_centres_on_a_row(viewer, qtbot, tmp_path):
    widget = MeasureWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Measure objects")
    layer = viewer.layers["synthetic EM objects (truth)"]
    widget.objects.value = layer
    widget.measure()
    rows = widget.table.data.to_list()
    assert len(rows) == len(np.unique(layer.data)) - 1
    widget.centre(2)
    assert layer.selected_label == int(rows[2][0])
    widget.csv.value = str(tmp_path / "objects.csv")
    widget.export()
    assert (tmp_path / "objects.csv").read_text().count("\n") == len(rows) + 1
    photograph(viewer, "measure")


def test_compare_widget_draws_the_errors(viewer, qtbot):
    truth = viewer.layers["synthetic EM objects (truth)"]
    flawed = np.asarray(truth.data).copy()
    flawed[flawed == np.unique(flawed)[1]] = 0  # one object missed
    viewer.add_labels(flawed, scale=truth.scale, name="objects")
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compare with a reference")
    widget.prediction.value, widget.reference.value = viewer.layers["objects"], truth
    widget.compare()
    assert "missed 1" in widget.result.value
    assert (np.asarray(viewer.layers["objects errors"].data) == 1).sum() == (flawed != np.asarray(truth.data)).sum()
    photograph(viewer, "compare")
