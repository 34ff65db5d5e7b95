"""Reader, writer, sample data and the widgets' logic on napari's ViewerModel (no Qt)."""
import numpy as np
import pandas as pd
import pytest
from napari.components import ViewerModel

from reisoseg.commands.main import main
from reisoseg.errors import ReIsoSegError
from reisoseg.inference.segment import SegmentationCancelled, segment
from reisoseg.io.volume import open_volume, write_volume
from reisoseg.napari.compare import compare_layers
from reisoseg.napari.layers import SCORES, add_layers
from reisoseg.napari.measure import centre_on_object, export_csv, hide_objects, measure_layer
from reisoseg.napari.reader import get_reader
from reisoseg.napari.sample_data import SHAPE, synthetic_volume
from reisoseg.napari.segment import SegmentRequest, segment_layer
from reisoseg.napari.writer import write_labels
from reisoseg.synthetic.generator import generate_volume
from tests.inference.torch_model import TorchModelLoader

SPACING = (40.0, 5.0, 5.0)


def opened(path) -> list:
    reader = get_reader(str(path))
    assert reader is not None, f"no reader for {path}"
    viewer = ViewerModel()
    return add_layers(viewer, reader(str(path)))


@pytest.mark.parametrize("name", ["raw.tif", "raw.h5", "raw.zarr"])
def test_reader_gives_the_files_spacing_as_scale(tmp_path, name):
    image = np.arange(4 * 32 * 48, dtype=np.uint8).reshape(4, 32, 48)
    write_volume(tmp_path / name, image, SPACING)
    [layer] = opened(tmp_path / name)
    assert layer._type_string == "image"
    assert tuple(layer.scale) == SPACING
    assert np.array_equal(np.asarray(layer.data), image)
    if name != "raw.tif":  # zarr and HDF5 open lazily
        assert type(layer.data).__module__.startswith("dask")


def test_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("not a volume")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None


@pytest.mark.parametrize("name", ["objects.zarr", "objects.tif"])
def test_written_labels_read_back_identical_with_their_spacing(tmp_path, name):
    objects = np.zeros((4, 32, 48), np.uint32)
    objects[1:3, 4:12, 5:20] = 7
    objects[0, 20:30, 30:40] = 70_000  # beyond uint16: an OME-TIFF, not ImageJ
    viewer = ViewerModel()
    layer = viewer.add_labels(objects, scale=SPACING)
    [written] = write_labels(str(tmp_path / name), layer.data, {"scale": layer.scale})
    [back] = opened(written)
    assert back._type_string == "labels"
    assert tuple(back.scale) == SPACING
    assert np.array_equal(np.asarray(back.data), objects)


def test_writer_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ReIsoSegError, match="only 3D"):
        write_labels(str(tmp_path / "a.zarr"), np.zeros((4, 4), np.uint8), {"scale": (1, 1)})
    with pytest.raises(ReIsoSegError, match=r"\.zarr \(OME-Zarr\) or \.tif"):
        write_labels(str(tmp_path / "a.png"), np.zeros((2, 4, 4), np.uint8), {"scale": (1, 1, 1)})
    assert not list(tmp_path.iterdir())


def test_sample_data_is_an_anisotropic_volume_with_its_truth():
    layers = add_layers(ViewerModel(), synthetic_volume())
    assert [layer._type_string for layer in layers] == ["image", "labels", "labels"]
    for layer in layers:
        assert layer.data.shape == SHAPE
        assert tuple(layer.scale) == SPACING
    assert len(np.unique(layers[2].data)) > 2  # several objects


@pytest.fixture(scope="module")
def instance_run(trained_instances, tmp_path_factory):
    """The tiny instance model's objects of a synthetic volume read by the plugin, segmented in 4 blocks."""
    _, model = trained_instances
    folder = tmp_path_factory.mktemp("napari_segment")
    volume = generate_volume((12, 96, 96), 8, seed=22)
    write_volume(folder / "raw.zarr", volume.image, volume.spacing)
    viewer = ViewerModel()
    [image] = add_layers(viewer, get_reader(str(folder / "raw.zarr"))(str(folder / "raw.zarr")))
    request = SegmentRequest(model=model, output=folder / "raw_seg.zarr", folds=["0"], tta=False, instances=True,
                             block=(12, 48, 48))
    layers = add_layers(viewer, segment_layer(image, request, threads=1))
    return viewer, image, layers, folder / "raw_seg.zarr"


def test_segment_gives_classes_and_objects_on_the_images_grid(instance_run):
    _, image, layers, output = instance_run
    classes, objects = layers
    assert (classes.name, objects.name) == ("raw_seg classes", "raw_seg objects")
    for layer in (classes, objects):
        assert layer.data.shape == image.data.shape
        assert tuple(layer.scale) == tuple(image.scale)
    ids = np.unique(np.asarray(objects.data))
    ids = ids[ids != 0]
    assert ids.size > 1
    assert sorted(int(i) for i in objects.metadata[SCORES]) == ids.tolist()  # one id per object, over all blocks
    assert (np.asarray(classes.data)[np.asarray(objects.data) > 0] > 0).all()
    recorded = open_volume(output)
    assert recorded.labels and recorded.spacing == tuple(image.scale)


def test_measure_gives_the_table_of_reisoseg_measure(instance_run, tmp_path):
    viewer, _, (_, objects), output = instance_run
    table = measure_layer(objects)
    assert main(["measure", str(output), "-o", str(tmp_path / "cli.csv"), "--no_progress"]) in (0, None)
    cli = pd.read_csv(tmp_path / "cli.csv")
    pd.testing.assert_frame_equal(table.reset_index(drop=True), cli, check_dtype=False)
    export_csv(objects, tmp_path / "widget.csv")
    assert (tmp_path / "widget.csv").read_text() == (tmp_path / "cli.csv").read_text()
    first = cli.iloc[0]
    centroid = centre_on_object(viewer, objects, int(first["id"]))
    assert centroid == (first["centroid_z_nm"], first["centroid_y_nm"], first["centroid_x_nm"])
    assert tuple(viewer.dims.point) == pytest.approx(centroid)
    assert objects.selected_label == int(first["id"])


def test_objects_below_a_score_or_a_size_are_hidden(instance_run):
    _, _, (_, objects), _ = instance_run
    table = measure_layer(objects)
    cut = float(table["score"].median())
    hidden = hide_objects(objects, min_score=cut)
    below = table["id"][table["score"] < cut].tolist()
    assert hidden == len(below) > 0
    alpha = objects.colormap.map(np.array(table["id"].tolist()))[:, 3]
    assert (alpha[table["score"] < cut] == 0).all() and (alpha[table["score"] >= cut] > 0).all()
    assert hide_objects(objects, min_volume_um3=float(table["volume_um3"].max()) + 1) == len(table)
    assert hide_objects(objects) == 0


def test_cancelled_run_continues_where_it_stopped(tmp_path):
    image = generate_volume((8, 64, 64), 8, seed=3).image
    viewer = ViewerModel()
    layer = viewer.add_image(image, scale=SPACING)  # in memory: named by its contents in the run's record
    request = SegmentRequest(model=TorchModelLoader(seed=1), output=tmp_path / "seg.zarr", tta=False,
                             block=(8, 32, 32))
    done = []
    with pytest.raises(SegmentationCancelled, match="cancelled"):
        segment_layer(layer, request, should_stop=lambda: bool(done.append(1)) or len(done) >= 3, threads=1)
    partial = tmp_path / "seg.zarr.partial"
    markers = list((partial / ".blocks").iterdir())
    assert partial.is_dir() and not (tmp_path / "seg.zarr").exists() and 0 < len(markers) < 4
    [(labels, options, _)] = segment_layer(layer, request, threads=1)
    whole = segment(image, SPACING, TorchModelLoader(seed=1), tta=False, block=(8, 64, 64), progress=False)
    assert np.array_equal(np.asarray(labels), whole) and options["scale"] == SPACING


def test_compare_counts_and_draws_the_errors():
    truth = np.zeros((4, 40, 40), np.uint16)
    truth[:, 2:10, 2:10] = 1  # found
    truth[:, 12:20, 2:10], truth[:, 12:20, 10:18] = 2, 3  # merged into one
    truth[:, 30:38, 30:38] = 4  # missed
    prediction = np.zeros_like(truth)
    prediction[:, 2:10, 2:10] = 5
    prediction[:, 12:20, 2:19] = 6  # IoU below 0.5 with either
    prediction[:, 30:38, 2:10] = 7  # false
    viewer = ViewerModel()
    predicted = viewer.add_labels(prediction, scale=SPACING, name="objects", metadata={SCORES: {5: 0.9, 6: 0.8,
                                                                                                 7: 0.1}})
    reference = viewer.add_labels(truth, scale=SPACING, name="truth")
    metrics, (errors, options, kind) = compare_layers(predicted, reference)
    assert (metrics["false_objects"], metrics["missed_objects"], metrics["merges"]) == (1, 1, 1)
    assert metrics["f1_50"] == pytest.approx(2 * 1 / (4 + 3))
    assert kind == "labels" and options["scale"] == SPACING
    assert (errors[prediction == 7] == 3).all() and (errors[truth == 4] == 1).all()
    assert (errors[prediction == 6] == 4).all() and (errors[prediction == 5] == 0).all()
    with pytest.raises(ReIsoSegError, match="same shape"):
        compare_layers(predicted, viewer.add_labels(truth[:2], scale=SPACING))


def test_the_manifest_is_valid_and_its_commands_import():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("reisoseg")  # what `npe2 validate reisoseg` reads and checks
    manifest.validate_imports()
    assert {c.id for c in manifest.contributions.commands} >= {"reisoseg.get_reader", "reisoseg.write_labels",
                                                                "reisoseg.synthetic_volume", "reisoseg.segment",
                                                                "reisoseg.measure", "reisoseg.compare"}
