"""Frozen graphs of the structure, op types and names of MLPerf's two models, with random weights:
for tests, and for timing where the real checkpoints are not at hand (`python -m benchmark.bench
--resnet fixture`).

- MobileNet-v1 in TF-slim's 2018 form (MLPerf's `mobilenet_v1_1.0_224_frozen.pb`): `Conv2D` /
  `DepthwiseConv2dNative` + `FusedBatchNorm` + `Relu6`, TF-slim's exact node and weight names, any
  depth multiplier and input size.
- ResNet-50 v1.5 in the form of MLPerf's `resnet50_v1.pb` (TF official ResNet).

Weights are random, but batch-norm statistics are measured layer by layer on calibration images, so
every layer's activations are normalised and the logits are spread like a trained model's.
"""

from __future__ import annotations

import numpy as np

from benchmark.nn.mobilenet_v1 import mlperf_layers
from benchmark.nn.resnet50 import STAGES
from preprocessing.tf_import import import_tensorflow

EPS = 0.001


def _calibrated_weights(multiplier: float, calib: np.ndarray, seed: int):
    """Random conv weights; BN moving statistics measured on `calib` (NHWC in [-1, 1])."""
    tf = import_tensorflow()

    rng = np.random.default_rng(seed)
    x = tf.constant(calib, tf.float32)
    weights = {}
    cin = 3
    for name, depthwise, cout, stride in mlperf_layers(multiplier):
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
    tf = import_tensorflow()

    weights, (logits_w, logits_b) = _calibrated_weights(multiplier, calib, seed)
    graph = tf.Graph()
    with graph.as_default():
        def const(name, value):
            c = tf.constant(value, name=name)
            return tf.identity(c, name=name + "/read") if read_identities else c

        net = tf.compat.v1.placeholder(tf.float32, [fixed_batch, image_size, image_size, 3], name="input")
        feature = image_size
        for name, depthwise, _, stride in mlperf_layers(multiplier):
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


def mlperf_mobilenet_v1_graph(calib: np.ndarray, seed: int = 0) -> bytes:
    """MLPerf's MobileNet-v1 1.0/224 structure, random weights (its family's fixture graph)."""
    return build_mobilenet_v1_graph(1.0, 224, calib, seed)


# ---------------------------------------------------------------------------------------------
# ResNet-50 v1.5 in the form of MLPerf's resnet50_v1.pb (TF official ResNet, `resnet_model/` scope)

RESNET_EPS = 1.001e-5


def _resnet_forward(net, ops, depth=tuple(n for n, _, _ in STAGES), width=64):
    """TF official ResNet v1.5 structure; `ops` computes (calibration) or emits graph nodes."""
    net = ops.identity(ops.unit(net, 0, 3, width, 7, 2), "initial_conv")
    net = ops.identity(ops.maxpool(ops.relu(net)), "initial_max_pool")
    k, cin = 1, width
    for stage, blocks in enumerate(depth):
        filters = width * 2 ** stage
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            if b == 0:  # projection conv is created first: conv2d_1, conv2d_11, ...
                shortcut = ops.unit(net, k, cin, 4 * filters, 1, stride, last=True)
                k += 1
            else:
                shortcut = net
            y = ops.relu(ops.unit(net, k, cin, filters, 1, 1))
            y = ops.relu(ops.unit(y, k + 1, filters, filters, 3, stride))  # v1.5: stride on the 3x3
            y = ops.unit(y, k + 2, filters, 4 * filters, 1, 1, last=True)
            net = ops.relu(ops.add(y, shortcut))
            k, cin = k + 3, 4 * filters
        net = ops.identity(net, f"block_layer{stage + 1}")
    return ops.head(net)


def _fixed_padding(kernel: int):
    total = kernel - 1
    return [total // 2, total - total // 2]


class _Calibrate:
    """Eager pass: random conv weights, batch-norm statistics measured on the calibration batch."""

    def __init__(self, calib, seed):
        tf = import_tensorflow()

        self.tf, self.rng, self.weights = tf, np.random.default_rng(seed), {}
        self.x = tf.constant(calib, tf.float32)

    def __call__(self, depth, width):
        return _resnet_forward(self.x, self, depth, width)

    def unit(self, x, k, cin, cout, kernel, stride, last=False):
        tf, rng = self.tf, self.rng
        w = rng.normal(0, np.sqrt(2 / (kernel * kernel * cin)), (kernel, kernel, cin, cout))
        w = (w * rng.uniform(0.03, 1.0, cout)).astype(np.float32)
        if stride > 1:
            x = tf.pad(x, [[0, 0], _fixed_padding(kernel), _fixed_padding(kernel), [0, 0]])
        y = tf.nn.conv2d(x, w, stride, "VALID" if stride > 1 else "SAME")
        mean, var = (t.numpy().astype(np.float32) for t in tf.nn.moments(y, axes=[0, 1, 2]))
        gamma = rng.uniform(0.2, 0.5, cout) if last else rng.uniform(0.5, 1.5, cout)
        beta = rng.uniform(-0.3, 0.3, cout) if last else rng.uniform(-0.2, 0.8, cout)
        gamma, beta = gamma.astype(np.float32), beta.astype(np.float32)
        self.weights[k] = (w, gamma, beta, mean, var)
        return (y - mean) / np.sqrt(var + RESNET_EPS) * gamma + beta

    def relu(self, x):
        return self.tf.nn.relu(x)

    def maxpool(self, x):
        return self.tf.nn.max_pool2d(x, 3, 2, "SAME")

    def add(self, a, b):
        return a + b

    def identity(self, x, name):
        return x

    def head(self, x):
        pooled = self.tf.reduce_mean(x, axis=[1, 2]).numpy()
        u = pooled.mean(0) / np.linalg.norm(pooled.mean(0))
        w = self.rng.normal(0, 1, (pooled.shape[1], 1001))
        w -= np.outer(u, u @ w)  # see _calibrated_weights: no large common logit part
        w *= 3.0 / (pooled @ w).std()
        self.weights["dense"] = (w.astype(np.float32), self.rng.normal(0, 0.1, 1001).astype(np.float32))


class _Emit:
    """Graph pass: the same network as named TF ops, as TF official ResNet names them."""

    def __init__(self, weights, layout, bn_op, read_identities):
        tf = import_tensorflow()

        self.tf, self.weights, self.layout = tf, weights, layout
        self.bn_op, self.read_identities = bn_op, read_identities
        self.counts: dict = {}

    def name(self, op):  # resnet_model/Relu, Relu_1, ...
        n = self.counts.get(op, 0)
        self.counts[op] = n + 1
        return f"resnet_model/{op}" + (f"_{n}" if n else "")

    def const(self, name, value):
        c = self.tf.constant(value, name=name)
        return self.tf.identity(c, name=name + "/read") if self.read_identities else c

    def window(self, s):
        return [1, s, s, 1] if self.layout == "NHWC" else [1, 1, s, s]

    def unit(self, x, k, cin, cout, kernel, stride, last=False):
        tf = self.tf
        w, gamma, beta, mean, var = self.weights[k]
        suffix = f"_{k}" if k else ""
        if stride > 1:
            pad = [[0, 0], _fixed_padding(kernel), _fixed_padding(kernel)]
            pad = pad + [[0, 0]] if self.layout == "NHWC" else [[0, 0], [0, 0]] + pad[1:]
            x = tf.pad(x, pad, name=self.name("Pad"))
        y = tf.raw_ops.Conv2D(input=x, filter=self.const(f"resnet_model/conv2d{suffix}/kernel", w),
                              strides=self.window(stride), padding="VALID" if stride > 1 else "SAME",
                              data_format=self.layout, name=f"resnet_model/conv2d{suffix}/Conv2D")
        bn = f"resnet_model/batch_normalization{suffix}"
        return getattr(tf.raw_ops, self.bn_op)(
            x=y, scale=self.const(bn + "/gamma", gamma), offset=self.const(bn + "/beta", beta),
            mean=self.const(bn + "/moving_mean", mean), variance=self.const(bn + "/moving_variance", var),
            epsilon=RESNET_EPS, data_format=self.layout, is_training=False, name=f"{bn}/{self.bn_op}")[0]

    def relu(self, x):
        return self.tf.nn.relu(x, name=self.name("Relu"))

    def maxpool(self, x):
        return self.tf.raw_ops.MaxPool(input=x, ksize=self.window(3), strides=self.window(2), padding="SAME",
                                       data_format=self.layout, name="resnet_model/max_pooling2d/MaxPool")

    def add(self, a, b):
        return self.tf.add(a, b, name=self.name("add"))

    def identity(self, x, name):
        return self.tf.identity(x, name=f"resnet_model/{name}")

    def head(self, x):
        tf = self.tf
        axes = [1, 2] if self.layout == "NHWC" else [2, 3]
        x = tf.reduce_mean(x, axes, keepdims=True, name="resnet_model/Mean")
        x = tf.identity(x, name="resnet_model/final_reduce_mean")
        x = tf.squeeze(x, axes, name="resnet_model/Squeeze")
        w, b = self.weights["dense"]
        x = tf.raw_ops.MatMul(a=x, b=self.const("resnet_model/dense/kernel", w), name="resnet_model/dense/MatMul")
        x = tf.nn.bias_add(x, self.const("resnet_model/dense/bias", b), name="resnet_model/dense/BiasAdd")
        logits = tf.identity(x, name="resnet_model/final_dense")
        tf.argmax(logits, axis=1, name="ArgMax")
        tf.nn.softmax(logits, name="softmax_tensor")
        return logits


def build_resnet50_graph(calib: np.ndarray, seed: int = 0, image_size: int = 224, layout: str = "NHWC",
                         bn_op: str = "FusedBatchNorm", read_identities: bool = True,
                         width: int = 64, depth=tuple(n for n, _, _ in STAGES)) -> bytes:
    """Serialized frozen GraphDef with MLPerf's resnet50_v1.pb structure, op types and names.
    `layout="NCHW"` is the channels_first export (NHWC input transposed inside the graph);
    `width`/`depth` shrink the network for quick tests (64 and (3, 4, 6, 3) are ResNet-50)."""
    tf = import_tensorflow()

    calibrate = _Calibrate(calib, seed)
    calibrate(depth, width)
    graph = tf.Graph()
    with graph.as_default():
        net = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3], name="input_tensor")
        if layout == "NCHW":
            net = tf.transpose(net, [0, 3, 1, 2], name="resnet_model/transpose")
        _resnet_forward(net, _Emit(calibrate.weights, layout, bn_op, read_identities), depth, width)
    return graph.as_graph_def().SerializeToString()
