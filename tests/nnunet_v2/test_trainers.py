"""The v2 trainers' own hooks, on plans made by hand (no planning, no data): network and pattern, fitted patch,
deep-supervision targets, the loss, the online evaluation's head, and the network against the v1 adapter."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed")

from reisoseg.loss import ReIsoLoss  # noqa: E402
from reisoseg.network import ReIsoSegRMV6  # noqa: E402


def _plans(spacing, patch) -> dict:
    """The parts of v2's plans a trainer reads, for one 3d_fullres configuration."""
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch), "median_image_size_in_voxels": [16.0, 64.0, 64.0], "spacing": list(spacing),
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                         "arch_kwargs": {}, "_kw_requires_import": []},
        "batch_dice": False}
    return {"dataset_name": "Dataset601_Hand", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": [16, 64, 64],
            "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"3d_fullres": configuration}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
            "continue_training": False}


DATASET = {"channel_names": {"0": "EM"}, "labels": {"background": 0, "mitochondria": 1, "mitochondria_boundary": 2},
           "numTraining": 1, "file_ending": ".nii.gz"}


@pytest.fixture
def folders(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


def _trainer(spacing=(40.0, 5.0, 5.0), patch=(16, 64, 64), name="ReIsoSegTrainer"):
    from reisoseg.nnunet_v2.trainers import TRAINERS

    return TRAINERS[name](_plans(spacing, patch), "3d_fullres", 0, DATASET, device=torch.device("cpu"))


def _network(trainer, deep_supervision=True):
    return trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1,
                                              trainer.label_manager.num_segmentation_heads, deep_supervision)


@pytest.mark.parametrize("spacing, name, pattern", [((40.0, 5.0, 5.0), "ReIsoSegTrainer", (2, 2, 2)),
                                                    ((20.0, 5.0, 5.0), "ReIsoSegTrainer", (1, 2, 2)),
                                                    ((40.0, 5.0, 5.0), "ReIsoSegRMA4V6Trainer", (1, 2, 2))])
def test_the_network_is_reisoseg_with_the_pattern_of_the_spacing_or_the_trainer(folders, spacing, name, pattern):
    trainer = _trainer(spacing, name=name)
    network = _network(trainer)
    assert isinstance(network, ReIsoSegRMV6) and network.ani_scale == pattern and network.deep_supervision
    assert not _network(trainer, deep_supervision=False).deep_supervision  # what v2's predictor builds


def test_the_planned_patch_is_rounded_down_to_what_the_pattern_divides(folders):
    trainer = _trainer(patch=(13, 50, 70))  # (2, 2, 2) needs z % 2, y and x % 16
    assert list(trainer.configuration_manager.patch_size) == [12, 48, 64]
    assert trainer.plans_manager.plans["configurations"]["3d_fullres"]["patch_size"] == [12, 48, 64]  # kept


@pytest.mark.parametrize("spacing", [(40.0, 5.0, 5.0), (20.0, 5.0, 5.0), (5.0, 5.0, 5.0)])
def test_downsampled_targets_have_each_heads_shape(folders, spacing):
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    trainer = _trainer(spacing)
    patch = tuple(trainer.configuration_manager.patch_size)
    with torch.no_grad():
        heads = _network(trainer)(torch.zeros(1, 1, *patch))
    targets = DownsampleSegForDSTransform(trainer._get_deep_supervision_scales())(
        segmentation=torch.zeros(1, *patch))["segmentation"]
    assert [tuple(t.shape[1:]) for t in targets] == [tuple(h.shape[2:]) for h in heads]


def test_the_loss_is_the_reisotropic_loss_over_v2s_dice_and_cross_entropy(folders):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss

    loss = _trainer()._build_loss()
    assert isinstance(loss, ReIsoLoss) and isinstance(loss.base_loss, DC_and_CE_loss) and loss.ani_weight == 0.5


def _batch(trainer, seed=0):
    generator = torch.Generator().manual_seed(seed)
    patch = tuple(trainer.configuration_manager.patch_size)
    labels = torch.randint(0, 3, (2, 1, *patch), generator=generator).float()
    scales = trainer._get_deep_supervision_scales()
    targets = [torch.nn.functional.interpolate(labels, scale_factor=tuple(scale), mode="nearest-exact")
               if scale != [1.0, 1.0, 1.0] else labels for scale in scales]
    return {"data": torch.randn(2, 1, *patch, generator=generator), "target": targets}


def test_online_evaluation_scores_the_inference_head_and_the_loss_keeps_its_branches(folders):
    trainer = _trainer()
    trainer.network, trainer.loss = _network(trainer), trainer._build_loss()
    batch = _batch(trainer)
    trainer.network.eval()
    with torch.no_grad():
        torch.manual_seed(1)  # the same PI transform in both passes
        heads = trainer.network(batch["data"])
        expected_loss = float(trainer.loss(heads, batch["target"]))
        torch.manual_seed(1)
        result = trainer.validation_step(batch)
    predicted, truth = heads[3].argmax(1), batch["target"][3][:, 0]
    for label in (1, 2):
        assert result["tp_hard"][label - 1] == ((predicted == label) & (truth == label)).sum()
        assert result["fp_hard"][label - 1] == ((predicted == label) & (truth != label)).sum()
    assert float(result["loss"]) == pytest.approx(expected_loss, rel=1e-5)
    assert not trainer.network.ani_branch_first and trainer.loss.__class__ is ReIsoLoss  # restored


def test_deep_supervision_is_switched_on_the_network_itself(folders):
    trainer = _trainer()
    trainer.network = _network(trainer)
    trainer.set_deep_supervision_enabled(False)
    assert torch.is_tensor(trainer.network(torch.zeros(1, 1, 16, 64, 64)))


def test_the_network_under_v2_equals_the_v1_adapter_with_the_same_weights(folders):
    from reisoseg.nnunet_v1.network import ReIsoSegV1Network

    torch.manual_seed(0)
    v2 = _network(_trainer())
    v1 = ReIsoSegV1Network(1, 3, (2, 2, 2))
    v1.net.load_state_dict(v2.state_dict())
    image = torch.randn(1, 1, 16, 64, 64)
    v1.eval(), v2.eval()
    with torch.no_grad():
        for deep_supervision in (False, True):
            v1.do_ds = v2.deep_supervision = deep_supervision
            torch.manual_seed(1)  # the same PI transform in both
            ours = v2(image)
            torch.manual_seed(1)
            theirs = v1(image)
            pairs = zip(ours, theirs) if deep_supervision else [(ours, theirs)]
            assert all(torch.equal(a, b) for a, b in pairs)


def test_v2_finds_our_trainers_in_the_folder_nnunet_ext_trainer_names(monkeypatch):
    """The part of nnUNetv2_train's trainer search that reads nnUNet_extTrainer, as v2 runs it."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from reisoseg.nnunet_v2.external import FOLDER
    from reisoseg.nnunet_v2.trainers import TRAINERS

    for name in ("ReIsoSegTrainer", "ReIsoSegRMA8V6Trainer"):
        found = recursive_find_python_class(str(FOLDER), name, None, base_folder=str(FOLDER),
                                            cleanup_imports_from_base_folder=True)
        assert found is TRAINERS[name]
    assert recursive_find_python_class(str(FOLDER), "nnUNetTrainer", None, base_folder=str(FOLDER)) is None


@pytest.mark.parametrize("name", ["ReIsoSegTrainer", "nnUNetTrainerEM"])
def test_em_augmentation_damages_sections_of_each_sample_before_v2s_own_transforms(folders, name):
    from reisoseg.augmentation import MissingSection
    from reisoseg.nnunet_v2.em_training import SectionDefectsTransform

    trainer = _trainer(name=name)
    arguments = ((16, 64, 64), ((0, 0),) * 3, None, (1, 2), True)  # patch, rotation, scales, mirror axes, dummy 2D
    assert not any(isinstance(t, SectionDefectsTransform) for t in trainer.get_training_transforms(*arguments)
                   .transforms)
    trainer.em_augmentation = True
    assert isinstance(trainer.get_training_transforms(*arguments).transforms[0], SectionDefectsTransform)

    image = torch.arange(4 * 8 * 8, dtype=torch.float32).reshape(1, 4, 8, 8)
    labels = (image > 100).to(torch.int16)
    sample = SectionDefectsTransform([MissingSection(p_per_sample=1.0, max_sections=1)])(
        image=image.clone(), segmentation=labels.clone())
    changed = [z for z in range(4) if not torch.equal(sample["image"][:, z], image[:, z])]
    assert len(changed) == 1 and sample["image"][0, changed[0]].unique().numel() == 1  # one section, one value
    assert torch.equal(sample["segmentation"], labels)  # a blank section keeps its truth


@pytest.mark.parametrize("name, variable, compiles, logged", [
    ("ReIsoSegTrainer", None, False, "torch.compile off: the PI module's 12 transforms"),
    ("ReIsoSegTrainer", "1", True, None),  # asked for: v2's own rule
    ("ReIsoSegTrainer", "0", False, None),
    ("nnUNetTrainerEM", None, True, None),  # the baseline keeps v2's default
])
def test_only_an_explicit_nnunet_compile_compiles_reisoseg_on_cuda(folders, monkeypatch, name, variable, compiles,
                                                                   logged):
    if variable is None:
        monkeypatch.delenv("nnUNet_compile", raising=False)
    else:
        monkeypatch.setenv("nnUNet_compile", variable)
    trainer = _trainer(name=name)
    trainer.device, messages = torch.device("cuda"), []  # v2 asks when it initialises the network
    trainer.print_to_log_file = lambda *args, **kwargs: messages.append(" ".join(map(str, args)))
    assert trainer._do_i_compile() is compiles
    assert (messages[0].startswith(logged) if logged else messages == [])
