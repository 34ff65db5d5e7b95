import h5py
import numpy as np
import pytest
import tifffile
import zarr

from reisoseg.io.volume import open_volume, write_volume

SPACING = (40.0, 5.0, 5.0)


@pytest.fixture
def data():
    return (np.random.default_rng(0).random((5, 16, 24)) * 1000).astype(np.uint16)


@pytest.mark.parametrize("name", ["stack.tif", "volume.h5", "volume.h5:/em/raw", "volume.zarr", "volume.nii.gz",
                                  "volume.mha"])
def test_round_trip_keeps_data_dtype_and_spacing(tmp_path, data, name):
    write_volume(tmp_path / name, data, SPACING)
    volume = open_volume(tmp_path / name)
    assert volume.shape == (5, 16, 24)
    assert volume.read().dtype == np.uint16 and np.array_equal(volume.read(), data)
    assert volume.spacing == pytest.approx(SPACING)


def test_section_folder_in_natural_order_has_no_spacing(tmp_path, data):
    import imageio.v3 as iio

    folder = tmp_path / "sections"
    folder.mkdir()
    for z in range(5):
        iio.imwrite(folder / f"s{z}.png", data[z].astype(np.uint8)) if z % 2 else tifffile.imwrite(
            folder / f"s{z}.tif", data[z].astype(np.uint8))
    (folder / "notes.txt").write_text("ignored")
    volume = open_volume(folder)
    assert volume.shape == (5, 16, 24) and volume.spacing is None
    assert np.array_equal(volume.read(), data.astype(np.uint8))


def test_rgb_png_with_identical_channels_is_greyscale(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "rgb"
    folder.mkdir()
    for z in range(2):
        grey = np.full((8, 8), 10 * z + 1, np.uint8)
        iio.imwrite(folder / f"{z:02d}.png", np.stack([grey] * 3, -1))
    assert open_volume(folder).read()[:, 0, 0].tolist() == [1, 11]


def test_ome_tiff_spacing_in_micrometres(tmp_path, data):
    path = tmp_path / "ome.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.005, "PhysicalSizeY": 0.005,
                                                     "PhysicalSizeZ": 0.04, "PhysicalSizeXUnit": "µm"})
    assert open_volume(path).spacing == pytest.approx(SPACING)


def test_hdf5_element_size_um_and_lazy_access(tmp_path, data):
    path = tmp_path / "ilastik.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("exported_data", data=data).attrs["element_size_um"] = [0.04, 0.005, 0.005]
    volume = open_volume(f"{path}:/exported_data")
    assert isinstance(volume.data, h5py.Dataset) and volume.spacing == pytest.approx(SPACING)
    assert np.array_equal(volume.data[1:3, :4], data[1:3, :4])


def test_ome_zarr_written_is_ngff_04_and_ngff_05_is_read(tmp_path, data):
    write_volume(tmp_path / "a.zarr", data, SPACING)
    attrs = zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs.asdict()
    assert attrs["multiscales"][0]["axes"][0] == {"name": "z", "type": "space", "unit": "nanometer"}
    group = zarr.open_group(str(tmp_path / "b.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", shape=(1, *data.shape), dtype=data.dtype)[...] = data[None]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space", "unit": "micrometer"}
                                                      for a in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale",
                                                                   "scale": [1, 0.04, 0.005, 0.005]}]}]}]}
    volume = open_volume(tmp_path / "b.zarr")
    assert volume.shape == data.shape and volume.spacing == pytest.approx(SPACING)
    assert np.array_equal(volume.read(), data)


def test_writes_are_atomic_on_failure(tmp_path):
    with pytest.raises(ValueError):
        write_volume(tmp_path / "bad.nii.gz", np.zeros((2, 2)), SPACING)
    assert list(tmp_path.iterdir()) == []


def test_compressed_tiff_is_read_lazily(tmp_path, data):
    tifffile.imwrite(tmp_path / "zlib.tif", data, compression="zlib")
    tifffile.imwrite(tmp_path / "plane.tif", data[0], compression="zlib")
    volume = open_volume(tmp_path / "zlib.tif")
    assert not isinstance(volume.data, np.ndarray)  # pages are decoded when sliced, not on open
    np.testing.assert_array_equal(volume.data[1:3, 2:5], data[1:3, 2:5])
    np.testing.assert_array_equal(volume.read(), data)
    assert open_volume(tmp_path / "plane.tif").shape == (1, *data.shape[1:])


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_nifti_keeps_nan_and_inf_where_the_file_has_them(tmp_path, name):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    data[1, 2, 4], data[2, 0, 1], data[0, 3, 0] = np.nan, np.inf, -np.inf
    write_volume(tmp_path / name, data, (40.0, 5.0, 5.0))
    read = open_volume(tmp_path / name).read()
    assert np.isnan(read[1, 2, 4]) and read[2, 0, 1] == np.inf and read[0, 3, 0] == -np.inf
    finite = np.isfinite(data)
    assert np.array_equal(read[finite], data[finite]) and np.isfinite(read).sum() == finite.sum()


def test_a_bug_in_a_reader_is_not_reported_as_a_corrupt_file(tmp_path, monkeypatch):
    """Only what a corrupt file makes the readers raise becomes "cannot read"; our own bugs keep their traceback."""
    from reisoseg.io import tiff

    write_volume(tmp_path / "stack.tif", np.zeros((2, 8, 8), np.uint8), (40.0, 5.0, 5.0))

    def buggy(path):
        raise TypeError("a bug of ours")

    monkeypatch.setattr(tiff, "read_tiff", buggy)
    with pytest.raises(TypeError, match="a bug of ours"):
        open_volume(tmp_path / "stack.tif")
