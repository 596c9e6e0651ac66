"""Net surgery, as Caffe's notebook net_surgery does it: cast the inner product layers
of a trained classifier into the convolutions of a fully convolutional version, so it
classifies every window of a larger image at once; check that on an image of the
original size both nets give the same output. The net is Caffe's trained LeNet (MNIST).

Written for pycaffe; with jitnet only the import changes (`import jitnet as caffe`).

    python examples/pycaffe/net_surgery.py [DEPLOY.prototxt WEIGHTS.caffemodel [OUT_FOLDER]]
"""
import os
import sys

import numpy as np

import caffe

import digits_data

L, P = caffe.layers, caffe.params          # pycaffe: from caffe import layers as L, params as P

model_def, model_weights, out = digits_data.lenet_files(sys.argv[1:], "net_surgery_")
caffe.set_mode_cpu()

# Load the original network and extract the fully connected layers' parameters.
net = caffe.Net(model_def, model_weights, caffe.TEST)
params = ["ip1", "ip2"]
# fc_params = {name: (weights, biases)}
fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
for fc in params:
    print("{} weights are {} dimensional and biases are {} dimensional".format(fc, fc_params[fc][0].shape, fc_params[fc][1].shape))


def full_conv_lenet(height, width):
    """LeNet with ip1 and ip2 as convolutions: ip1-conv sees the 4x4 map of pool2 (50 x 4 x 4
    = the 800 inputs of ip1), ip2-conv is 1x1. Same conv1/conv2 names, so their weights load."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, height, width]))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20)
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50)
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n["ip1-conv"] = L.Convolution(n.pool2, kernel_size=4, num_output=500)
    n.relu1 = L.ReLU(n["ip1-conv"], in_place=True)
    n["ip2-conv"] = L.Convolution(n.relu1, kernel_size=1, num_output=10)
    n.prob = L.Softmax(n["ip2-conv"])
    return n.to_proto()


full_conv_def = os.path.join(out, "lenet_full_conv.prototxt")
with open(full_conv_def, "w") as f:
    f.write(str(full_conv_lenet(36, 36)))
# Load the fully convolutional network to transplant the parameters (conv1, conv2 by name).
net_full_conv = caffe.Net(full_conv_def, model_weights, caffe.TEST)
params_full_conv = ["ip1-conv", "ip2-conv"]
# conv_params = {name: (weights, biases)}
conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data) for pr in params_full_conv}
for conv in params_full_conv:
    print("{} weights are {} dimensional and biases are {} dimensional".format(conv, conv_params[conv][0].shape, conv_params[conv][1].shape))

for pr, pr_conv in zip(params, params_full_conv):
    conv_params[pr_conv][0].flat = fc_params[pr][0].flat  # flat unrolls the arrays
    conv_params[pr_conv][1][...] = fc_params[pr][1]
net_full_conv.save(os.path.join(out, "lenet_full_conv.caffemodel"))

# The fully convolutional net on a 36x36 image: a 3x3 map of classifications, one for each
# 28x28 window at a stride of 4 pixels; its corner window is the 28x28 image itself.
_, _, test_x, test_y = digits_data.load(frames=True)
big = np.zeros((1, 1, 36, 36), np.float32)
big[0, 0, :28, :28] = test_x[0, 0]
out_map = net_full_conv.forward(data=big)["prob"]
print("class map of the 36x36 image:\n", out_map[0].argmax(axis=0))

net.blobs["data"].reshape(1, 1, 28, 28)
original = net.forward(data=big[:, :, :28, :28])["prob"][0]
corner = out_map[0, :, 0, 0]
print("original net:", original.argmax(), "fully convolutional net, corner window:", corner.argmax(),
      f"(the digit is a {int(test_y[0])})")
assert np.allclose(original, corner, rtol=1e-4, atol=1e-6), (original, corner)
print("outputs agree: max difference", float(np.abs(original - corner).max()))
