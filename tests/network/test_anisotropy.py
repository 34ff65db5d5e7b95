import pytest

from reisoseg.network.anisotropy import (
    ani_scale_from_spacing,
    check_input_shape,
    fit_patch_size,
    pi_z_factors,
    pool_kernel_sizes,
    required_divisor,
)


@pytest.mark.parametrize("pattern, divisor", [((1, 1, 1), (16, 16, 16)), ((1, 1, 2), (8, 16, 16)),
                                              ((1, 2, 2), (4, 16, 16)), ((2, 2, 2), (2, 16, 16))])
def test_required_divisor_matches_spec_table(pattern, divisor):
    assert required_divisor(pattern) == divisor


def test_pool_kernels_put_isotropic_pools_first_for_a4():
    assert pool_kernel_sizes((1, 2, 2)) == [(2, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]


@pytest.mark.parametrize("pattern, factors", [((1, 1, 1), (1, 1)), ((1, 1, 2), (2, 2)), ((1, 2, 2), (4, 2)),
                                              ((2, 2, 2), (4, 2))])
def test_pi_z_factors_ignore_first_stage(pattern, factors):
    assert pi_z_factors(pattern) == factors


@pytest.mark.parametrize("spacing, pattern", [((5, 5, 5), (1, 1, 1)), ((10, 5, 5), (1, 1, 2)), ((20, 5, 5), (1, 2, 2)),
                                              ((40, 5, 5), (2, 2, 2)), ((50, 4.6, 4.6), (2, 2, 2)),
                                              ((14, 5, 5), (1, 1, 2)), ((30, 5, 5), (2, 2, 2)), ((3, 5, 5), (1, 1, 1))])
def test_pattern_from_spacing_is_nearest_ratio_on_log_scale(spacing, pattern):
    assert ani_scale_from_spacing(spacing) == pattern


def test_fit_patch_size_rounds_down_and_rejects_too_small():
    assert fit_patch_size((12, 100, 70), (1, 1, 2)) == (8, 96, 64)
    with pytest.raises(ValueError, match="too small"):
        fit_patch_size((12, 64, 64), (1, 1, 1))


@pytest.mark.parametrize("bad", [(1, 1), (1, 3, 2), (0, 1, 1)])
def test_invalid_patterns_are_rejected(bad):
    with pytest.raises(ValueError, match="1 or 2"):
        required_divisor(bad)


def test_check_input_shape_names_shape_and_divisor():
    with pytest.raises(ValueError, match=r"\(10, 64, 64\).*\(4, 16, 16\)"):
        check_input_shape((10, 64, 64), (1, 2, 2))
