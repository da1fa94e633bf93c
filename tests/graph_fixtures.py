"""Frozen TF-slim MobileNet-v1 graphs in the 2018 form (MLPerf's `mobilenet_v1_1.0_224_frozen.pb`):
`Conv2D` / `DepthwiseConv2dNative` + `FusedBatchNorm` + `Relu6`, TF-slim's exact node and weight names,
any depth multiplier and input size.

Weights are random, but batch-norm statistics are measured layer by layer on calibration images, so
every layer's activations are normalised and the logits are spread like a trained model's.
"""

from __future__ import annotations

import numpy as np

BASE_CHANNELS = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
DW_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
EPS = 0.001


def _depth(channels: int, multiplier: float) -> int:
    return max(int(channels * multiplier), 8)  # TF-slim's min_depth = 8


def mobilenet_v1_layers(multiplier: float):
    """(name, depthwise, out_channels or None, stride) for TF-slim's 27 conv layers."""
    layers = [("Conv2d_0", False, _depth(32, multiplier), 2)]
    for i, (c, s) in enumerate(zip(BASE_CHANNELS, DW_STRIDES), 1):
        layers.append((f"Conv2d_{i}_depthwise", True, None, s))
        layers.append((f"Conv2d_{i}_pointwise", False, _depth(c, multiplier), 1))
    return layers


def _calibrated_weights(multiplier: float, calib: np.ndarray, seed: int):
    """Random conv weights; BN moving statistics measured on `calib` (NHWC in [-1, 1])."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = tf.constant(calib, tf.float32)
    weights = {}
    cin = 3
    for name, depthwise, cout, stride in mobilenet_v1_layers(multiplier):
        if depthwise:
            w = rng.normal(0, np.sqrt(2 / 9), (3, 3, cin, 1)).astype(np.float32)
            cout = cin
        else:
            k = 3 if name == "Conv2d_0" else 1
            w = rng.normal(0, np.sqrt(2 / (k * k * cin)), (k, k, cin, cout)).astype(np.float32)
        # Channels of very different scale, as in trained models: small variances make the
        # graph's epsilon matter, so a wrong epsilon cannot hide in float noise.
        w *= rng.uniform(0.03, 1.0, (cin, 1) if depthwise else cout).astype(np.float32)
        y = (tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME") if depthwise
             else tf.nn.conv2d(x, w, stride, "SAME"))
        mean, var = (t.numpy() for t in tf.nn.moments(y, axes=[0, 1, 2]))
        gamma = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        beta = rng.uniform(-0.2, 0.8, cout).astype(np.float32)
        x = tf.nn.relu6((y - mean) / np.sqrt(var + EPS) * gamma + beta)
        weights[name] = (w, gamma, beta, mean.astype(np.float32), var.astype(np.float32))
        cin = cout
    pooled = tf.reduce_mean(x, axis=[1, 2]).numpy()
    # Remove the direction of the mean feature from the classifier (ReLU6 features share a large
    # common part) and spread the logits like a trained classifier's, so that the top-1 class
    # varies from image to image without a large cancelling bias.
    u = pooled.mean(0) / np.linalg.norm(pooled.mean(0))
    w = rng.normal(0, 1, (cin, 1001))
    w -= np.outer(u, u @ w)
    w *= 3.0 / (pooled @ w).std()
    bias = rng.normal(0, 0.1, 1001).astype(np.float32)
    return weights, (w.astype(np.float32)[None, None], bias)


def build_mobilenet_v1_graph(multiplier: float, image_size: int, calib: np.ndarray, seed: int = 0,
                             read_identities: bool = True, bn_op: str = "FusedBatchNorm",
                             fixed_batch: int | None = None) -> bytes:
    """Serialized GraphDef of a frozen TF-slim MobileNet-v1 (2018 form)."""
    import tensorflow as tf

    weights, (logits_w, logits_b) = _calibrated_weights(multiplier, calib, seed)
    graph = tf.Graph()
    with graph.as_default():
        def const(name, value):
            c = tf.constant(value, name=name)
            return tf.identity(c, name=name + "/read") if read_identities else c

        net = tf.compat.v1.placeholder(tf.float32, [fixed_batch, image_size, image_size, 3], name="input")
        feature = image_size
        for name, depthwise, _, stride in mobilenet_v1_layers(multiplier):
            w, gamma, beta, mean, var = weights[name]
            scope = f"MobilenetV1/MobilenetV1/{name}/"
            if depthwise:
                kernel = const(f"MobilenetV1/{name}/depthwise_weights", w)
                net = tf.raw_ops.DepthwiseConv2dNative(input=net, filter=kernel, strides=[1, stride, stride, 1],
                                                       padding="SAME", name=scope + "depthwise")
            else:
                kernel = const(f"MobilenetV1/{name}/weights", w)
                net = tf.raw_ops.Conv2D(input=net, filter=kernel, strides=[1, stride, stride, 1],
                                        padding="SAME", name=scope + "Conv2D")
            bn_args = dict(x=net, scale=const(f"MobilenetV1/{name}/BatchNorm/gamma", gamma),
                           offset=const(f"MobilenetV1/{name}/BatchNorm/beta", beta),
                           mean=const(f"MobilenetV1/{name}/BatchNorm/moving_mean", mean),
                           variance=const(f"MobilenetV1/{name}/BatchNorm/moving_variance", var),
                           epsilon=EPS, is_training=False, name=scope + "BatchNorm/" + bn_op)
            net = getattr(tf.raw_ops, bn_op)(**bn_args)[0]
            net = tf.nn.relu6(net, name=scope + "Relu6")
            feature = -(-feature // stride)
        kernel = min(7, feature)  # TF-slim's _reduced_kernel_size_for_small_input
        net = tf.nn.avg_pool2d(net, kernel, 2, "VALID", name="MobilenetV1/Logits/AvgPool_1a/AvgPool")
        net = tf.identity(net, name="MobilenetV1/Logits/Dropout_1b/Identity")
        net = tf.raw_ops.Conv2D(input=net, filter=const("MobilenetV1/Logits/Conv2d_1c_1x1/weights", logits_w),
                                strides=[1, 1, 1, 1], padding="SAME",
                                name="MobilenetV1/Logits/Conv2d_1c_1x1/Conv2D")
        net = tf.nn.bias_add(net, const("MobilenetV1/Logits/Conv2d_1c_1x1/biases", logits_b),
                             name="MobilenetV1/Logits/Conv2d_1c_1x1/BiasAdd")
        net = tf.squeeze(net, [1, 2], name="MobilenetV1/Logits/SpatialSqueeze")
        logits = tf.reshape(net, [-1, 1001], name="MobilenetV1/Predictions/Reshape")
        probs = tf.nn.softmax(logits, name="MobilenetV1/Predictions/Softmax")
        tf.reshape(probs, tf.shape(logits, name="MobilenetV1/Predictions/Shape"),
                   name="MobilenetV1/Predictions/Reshape_1")
    return graph.as_graph_def().SerializeToString()
