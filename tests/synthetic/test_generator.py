import numpy as np
import pytest
from scipy import ndimage

from reisoseg.synthetic import CLASSES, SynthParams, generate_volume
from reisoseg.synthetic.calibration import neighbour_section_correlation, noise_correlation

CONTACT_DARKER_BY = 10.0  # grey values, the least per volume (documentation/synthetic_data.md)


@pytest.fixture(scope="module")
def volume():
    return generate_volume((24, 128, 128), 8, seed=5, keep_isotropic=True)


def test_same_seed_same_volume_other_seed_differs():
    a = generate_volume((6, 48, 48), 4, seed=11)
    b = generate_volume((6, 48, 48), 4, seed=11)
    c = generate_volume((6, 48, 48), 4, seed=12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_shapes_dtypes_and_spacing(volume):
    assert volume.image.shape == volume.labels.shape == volume.instances.shape == (24, 128, 128)
    assert volume.image.dtype == np.uint8 and volume.labels.dtype == np.uint8
    assert volume.spacing == (40.0, 5.0, 5.0)
    assert volume.isotropic_labels.shape == (24 * 8, 128, 128)
    assert generate_volume((4, 32, 40), 3, seed=0, params=SynthParams(xy_spacing_nm=6.0)).spacing == (18.0, 6.0, 6.0)


@pytest.fixture(scope="module")
def demo_sized():
    return [generate_volume((32, 160, 160), 8, seed=seed) for seed in range(4)]


def test_label_fractions_in_stated_range(demo_sized):
    """Stated range: mitochondria 1-20 % of a 0.8 µm³ volume, 2.5-10 % on average (real stacks: 5.4 %, 8.8 %)."""
    fractions = []
    for volume in demo_sized:
        counts = np.bincount(volume.labels.ravel(), minlength=3) / volume.labels.size
        assert set(np.unique(volume.labels)) <= {0, 1, 2}
        assert 0.01 <= counts[CLASSES["mitochondria"]] <= 0.20 and counts[CLASSES["synapse"]] <= 0.05
        fractions.append(counts[CLASSES["mitochondria"]])
    assert 0.025 <= np.mean(fractions) <= 0.10


def test_section_labels_are_majority_of_isotropic_truth(volume):
    iso_mito = (volume.isotropic_labels == CLASSES["mitochondria"]).reshape(24, 8, 128, 128).mean(1) >= 0.5
    section_mito = volume.labels == CLASSES["mitochondria"]
    # sections are shifted by the misalignment (whole pixels), so compare fractions rather than voxels
    assert abs(iso_mito.mean() - section_mito.mean()) < 0.01


def test_decoys_exist_and_are_not_labelled(volume):
    assert volume.decoys.sum() > 50
    assert (volume.labels[volume.decoys] == CLASSES["mitochondria"]).mean() < 0.2


def test_at_least_a_quarter_of_mitochondria_lie_nearly_in_plane(demo_sized):
    total = flat = 0
    for volume in demo_sized:
        for i in (i for i in np.unique(volume.instances) if i):
            coords = np.argwhere(volume.instances == i) * np.array(volume.spacing)
            total += 1
            if len(coords) >= 50:
                _, _, vt = np.linalg.svd(coords - coords.mean(0), full_matrices=False)
                flat += abs(vt[0][0]) < 0.3  # main axis within ~17 degrees of the section plane
    assert total >= 8 and flat >= total / 4


def test_neighbour_correlation_falls_as_ratio_grows_and_noise_is_correlated():
    correlations = {r: neighbour_section_correlation(generate_volume((16, 128, 128), r, seed=9).image)
                    for r in (1, 8, 12)}
    assert correlations[1] > correlations[8] > correlations[12] - 0.02 and correlations[1] - correlations[12] > 0.05
    assert 0.23 <= correlations[8] <= 0.69  # the real stacks' range
    assert noise_correlation(generate_volume((8, 128, 128), 8, seed=9).image) > 0.5  # not pixel-white


@pytest.mark.parametrize("shape, ratio", [((0, 8, 8), 2), ((4, 8, 8), 0), ((4, 8, 8), 13)])
def test_invalid_requests_raise(shape, ratio):
    with pytest.raises(ValueError):
        generate_volume(shape, ratio)


def _contact_contrast(volume, axes: tuple[int, ...]) -> float | None:
    """Mean intensity deep inside touching objects minus that at their contacts along `axes` (None: no contact)."""
    ids = np.where(volume.labels == CLASSES["mitochondria"], volume.instances, 0).astype(np.int64)
    image = volume.image.astype(np.float32)
    contacts, touching = np.zeros(ids.shape, bool), set()
    for axis in axes:
        after, before = np.moveaxis(ids, axis, 0)[1:], np.moveaxis(ids, axis, 0)[:-1]
        faces = (after > 0) & (before > 0) & (after != before)
        mask = np.moveaxis(contacts, axis, 0)
        mask[1:] |= faces
        mask[:-1] |= faces
        touching |= set(after[faces].tolist()) | set(before[faces].tolist())
    if not contacts.any():
        return None
    deep = ndimage.binary_erosion(ids > 0, np.ones((1, 7, 7), bool)) & np.isin(ids, list(touching)) & ~contacts
    return float(image[deep].mean() - image[contacts].mean())


def test_touching_mitochondria_show_their_interface_across_sections_and_in_plane(demo_sized):
    """Each keeps its membrane and the gap between them, so the contact is darker than the interiors (stated in
    documentation/synthetic_data.md), whether it lies in plane or across sections, inside a section."""
    across = [_contact_contrast(v, (0,)) for v in demo_sized]
    in_plane = [_contact_contrast(v, (1, 2)) for v in demo_sized]
    assert None not in across and None not in in_plane  # every demo-sized volume has contacts of both kinds
    assert min(across) >= CONTACT_DARKER_BY and min(in_plane) >= CONTACT_DARKER_BY, (across, in_plane)
