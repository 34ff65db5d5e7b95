import json

import numpy as np

from reisoseg.io.nifti import read_nifti
from reisoseg.synthetic import CLASSES, generate_volume, make_synthetic_task
from reisoseg.synthetic.task import volume_seed


def test_task_layout_dataset_json_and_spacing(tmp_path):
    folder = make_synthetic_task(tmp_path, 503, "Layout", num_training=2, num_test=1, shape=(6, 32, 48), ratio=4,
                                 seed=1, classes=("mitochondria", "synapse"), progress=False)
    assert folder == tmp_path / "nnUNet_raw_data" / "Task503_Layout"
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["numTest"] == 1
    assert dataset["labels"] == {"0": "background", "1": "mitochondria", "2": "synapse"}
    assert dataset["modality"] == {"0": "EM"}
    assert dataset["training"][0] == {"image": "./imagesTr/synth_000.nii.gz", "label": "./labelsTr/synth_000.nii.gz"}
    image, spacing = read_nifti(folder / "imagesTr" / "synth_000_0000.nii.gz")
    labels, label_spacing = read_nifti(folder / "labelsTr" / "synth_000.nii.gz")
    assert image.shape == labels.shape == (6, 32, 48)
    assert spacing == label_spacing == (20.0, 5.0, 5.0)
    assert (folder / "labelsTs" / "synth_002.nii.gz").is_file()
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert not [p for p in tmp_path.joinpath("nnUNet_raw_data").iterdir() if p.name.startswith(".")]


def test_one_test_volume_of_a_task_regenerates_from_its_seed_alone(tmp_path):
    folder = make_synthetic_task(tmp_path, 504, "Seeds", num_training=2, num_test=1, shape=(6, 32, 48), ratio=4,
                                 seed=7, instances=True, progress=False)
    volume = generate_volume((6, 32, 48), 4, seed=volume_seed(7, 2))  # index 2: the test volume, after 2 training
    image, _ = read_nifti(folder / "imagesTs" / "synth_002_0000.nii.gz")
    objects, _ = read_nifti(folder / "instancesTs" / "synth_002.nii.gz")
    np.testing.assert_array_equal(image, volume.image)
    assert objects.any()
    np.testing.assert_array_equal(objects > 0, volume.labels == CLASSES["mitochondria"])


def test_a_v2_task_holds_the_same_volumes_in_v2s_layout(tmp_path):
    v1 = make_synthetic_task(tmp_path / "v1", 505, "Both", num_training=2, num_test=1, shape=(6, 32, 48), ratio=4,
                             seed=2, instances=True, progress=False)
    v2 = make_synthetic_task(tmp_path / "v2", 505, "Both", num_training=2, num_test=1, shape=(6, 32, 48), ratio=4,
                             seed=2, instances=True, progress=False, engine="v2")
    assert v2 == tmp_path / "v2" / "Dataset505_Both"
    dataset = json.loads((v2 / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "mitochondria": 1, "mitochondria_boundary": 2}
    assert dataset["reisoseg_instances"] == json.loads((v1 / "dataset.json").read_text())["reisoseg_instances"]
    for path in v1.rglob("*.nii.gz"):
        np.testing.assert_array_equal(read_nifti(path)[0], read_nifti(v2 / path.relative_to(v1))[0])
