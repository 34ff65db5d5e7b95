import json

import numpy as np

from reisoseg.io.nifti import read_nifti
from reisoseg.synthetic import make_synthetic_task


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
