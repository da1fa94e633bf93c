"""TF SAME padding and weight layouts, checked against TensorFlow itself."""

import numpy as np
import pytest
import torch

from benchmark.nn.layers import (
    Conv2dSame,
    ConvBnReLU6,
    ConvSpec,
    MaxPool2dSame,
    TFBatchNorm2d,
    fold_batch_norms,
    same_padding,
)


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 3, 2, (0, 1)),  # even size, stride 2: the extra pixel goes after
    (225, 3, 2, (1, 1)),  # odd size: symmetric
    (7, 3, 1, (1, 1)),
    (112, 1, 2, (0, 0)),
    (5, 7, 1, (3, 3)),
    (8, 4, 2, (1, 1)),
])
def test_same_padding_values(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize("size", [8, 9, 14, 15, 224, 193])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_same_matches_tensorflow(size, stride, depthwise):
    import tensorflow as tf

    rng = np.random.default_rng(size * 10 + stride)
    cin = 4
    x = rng.normal(size=(2, size, size, cin)).astype(np.float32)
    if depthwise:
        w = rng.normal(size=(3, 3, cin, 1)).astype(np.float32)
        expected = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME").numpy()
        conv = Conv2dSame(cin, cin, 3, stride, groups=cin, bias=False)
        conv.weight.data = torch.from_numpy(w.transpose(2, 3, 0, 1).copy())  # [k,k,C,1] -> [C,1,k,k]
    else:
        w = rng.normal(size=(3, 3, cin, 5)).astype(np.float32)
        expected = tf.nn.conv2d(x, w, stride, "SAME").numpy()
        conv = Conv2dSame(cin, 5, 3, stride, bias=False)
        conv.weight.data = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
    with torch.no_grad():
        got = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.shape == expected.shape
    # float32 sums of 36 products in another order: a few ulps of values of order 10.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (3, 1), (1, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_same_geometry_matches_tensorflow(kernel, stride, dilation, channels_last):
    """Every SAME geometry, odd padding on one axis or both (a zero-led kernel, or for dilated
    kernels a padded input): TF's windows, and the values of the explicitly padded conv."""
    import tensorflow as tf
    import torch.nn.functional as F

    rng = np.random.default_rng(kernel * 100 + stride * 10 + dilation)
    x = rng.normal(size=(2, 14, 17, 3)).astype(np.float32)  # even and odd sides
    w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
    expected = tf.nn.conv2d(x, w, stride, "SAME", dilations=dilation).numpy()
    conv = Conv2dSame(3, 4, kernel, stride, dilation=dilation, bias=False)
    conv.weight.data = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    xt = xt.contiguous(memory_format=torch.channels_last) if channels_last else xt.contiguous()
    with torch.no_grad():
        got = conv(xt)
        (top, bottom), (left, right) = (same_padding(n, kernel, stride, dilation) for n in (14, 17))
        padded = F.conv2d(F.pad(xt, (left, right, top, bottom)), conv.weight, None, stride, 0, dilation)
    assert got.shape == padded.shape == (2, 4) + expected.shape[1:3]
    # Sums of up to 147 products in another order (another kernel path): a few ulps of the largest value.
    ulps = 8 * np.spacing(np.abs(expected).max())
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=0, atol=ulps)
    np.testing.assert_allclose(got.numpy(), padded.numpy(), rtol=0, atol=ulps)


def test_wrong_permutation_is_detected():
    """The layout test above can fail: a transposed kernel (HWIO read as IOHW-like) does not match."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 9, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 3)).astype(np.float32)
    expected = tf.nn.conv2d(x, w, 1, "SAME").numpy()
    conv = Conv2dSame(3, 3, 3, 1, bias=False)
    conv.weight.data = torch.from_numpy(w.transpose(3, 2, 1, 0).copy())  # kh and kw swapped
    with torch.no_grad():
        got = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - expected).max() > 0.1


@pytest.mark.parametrize("folded", [True, False])
def test_batchnorm_matches_tensorflow(folded):
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x = rng.normal(2, 3, size=(2, 5, 5, 6)).astype(np.float32)
    gamma, beta, mean = (rng.normal(size=6).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.001, 2, 6).astype(np.float32)
    expected = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean, var, epsilon=0.001,
                                                 is_training=False)[0].numpy()
    bn = TFBatchNorm2d(6, 0.001, folded)
    for name, v in zip(("weight", "bias", "running_mean", "running_var"), (gamma, beta, mean, var)):
        getattr(bn, name).copy_(torch.from_numpy(v))
    got = bn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def _random_bn(bn: TFBatchNorm2d, rng) -> TFBatchNorm2d:
    n = bn.weight.numel()
    for name, v in (("weight", rng.normal(size=n)), ("bias", rng.normal(size=n)),
                    ("running_mean", rng.normal(size=n)), ("running_var", rng.uniform(0.001, 2, n))):
        getattr(bn, name).copy_(torch.from_numpy(v.astype(np.float32)))
    return bn


@pytest.mark.parametrize("folded_form", [True, False])
@pytest.mark.parametrize("depthwise", [False, True])
def test_folding_batch_norm_into_the_conv_keeps_the_function(folded_form, depthwise):
    rng = np.random.default_rng(4)
    layer = ConvBnReLU6(ConvSpec("l", 8, 8, 3, 2, 0.001, folded_form, depthwise)).eval()
    torch.nn.init.normal_(layer.conv.weight)
    _random_bn(layer.bn, rng)
    x = torch.from_numpy(rng.normal(size=(2, 8, 9, 10)).astype(np.float32))
    with torch.inference_mode():
        expected = layer(x)
    fold_batch_norms(layer)
    assert isinstance(layer.bn, torch.nn.Identity) and layer.conv.bias is not None
    with torch.inference_mode():
        got = layer(x)
    # The same function; only float32 rounding (one more product per filter weight) differs.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_batch_norm_without_a_conv_before_it_is_an_error():
    model = torch.nn.Sequential(torch.nn.ReLU(), TFBatchNorm2d(4, 0.001))
    with pytest.raises(ValueError, match="does not follow a bias-free conv"):
        fold_batch_norms(model)


@pytest.mark.parametrize("size", [112, 113, 7, 8, 2, 1])
@pytest.mark.parametrize("kernel,stride", [(3, 2), (2, 2), (3, 1), (5, 2), (1, 2), (2, 1), (4, 1)])
def test_max_pool_same_equals_tensorflow_exactly(size, kernel, stride):
    """Negative inputs, so that a zero-padded or misplaced window shows; a max is exact. Even
    kernels at stride 1 are the cases ceil_mode cannot express (padded explicitly)."""
    import tensorflow as tf

    x = -np.abs(np.random.default_rng(size).normal(size=(2, size, size + 3, 4)).astype(np.float32)) - 1
    expected = tf.nn.max_pool2d(x, kernel, stride, "SAME").numpy()
    got = MaxPool2dSame(kernel, stride)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.shape == expected.shape and got.tobytes() == expected.tobytes()
