import pytest
import torch

from reisoseg.loss import DS_WEIGHTS, ReIsoLoss


def _mse(output, target):
    return (output - target).square().mean()


def test_loss_equals_hand_computation_on_fixed_tensors():
    outputs = [torch.full((1, 2, 2, 2, 2), float(i)) for i in range(6)]
    targets = [torch.zeros(1, 2, 2, 2, 2)] * 6
    # per-head mse = i^2; weights [2/7, 1/7, 1/14] per branch
    l_iso = 2 / 7 * 0 + 1 / 7 * 1 + 1 / 14 * 4
    l_ani = 2 / 7 * 9 + 1 / 7 * 16 + 1 / 14 * 25
    loss = ReIsoLoss(_mse)
    total = loss(outputs, targets)
    assert total.item() == pytest.approx(0.5 * l_iso + 0.5 * l_ani)
    assert loss.last_iso == pytest.approx(l_iso) and loss.last_ani == pytest.approx(l_ani)
    loss.ani_weight = 0.8
    assert loss(outputs, targets).item() == pytest.approx(0.2 * l_iso + 0.8 * l_ani)


def test_reference_weights_sum_to_one_so_total_weight_is_half():
    assert sum(DS_WEIGHTS) == pytest.approx(1.0)
    ones = [torch.ones(1)] * 6
    assert ReIsoLoss(lambda o, t: o.sum())(ones, ones).item() == pytest.approx(0.5)


def test_loss_with_nnunet_dice_ce_matches_manual_sum():
    from nnunet.training.loss_functions.dice_loss import DC_and_CE_loss

    torch.manual_seed(0)
    base = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False}, {})
    outputs = [torch.randn(2, 2, 4, 8, 8) for _ in range(6)]
    targets = [torch.randint(0, 2, (2, 1, 4, 8, 8)).float() for _ in range(6)]
    expected = sum(0.5 * w * base(o, t) for w, o, t in zip(DS_WEIGHTS, outputs, targets))
    assert ReIsoLoss(base)(outputs, targets).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_lambda_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match="lambda"):
        ReIsoLoss(_mse, ani_weight=bad)


def test_wrong_number_of_outputs_is_rejected():
    with pytest.raises(ValueError, match="6 outputs"):
        ReIsoLoss(_mse)([torch.zeros(1)] * 3, [torch.zeros(1)] * 3)
