"""Classification with a trained net, as Caffe's notebook 00-classification does it: load
the deploy net and its weights, preprocess an image with caffe.io.Transformer, classify
it, print the top classes, look at the blobs' and parameters' shapes, and draw the first
layer's filters and outputs with matplotlib. The net is Caffe's trained LeNet (MNIST),
the image a handwritten digit from scikit-learn framed as MNIST frames its digits.

Written for pycaffe; with jitnet only the import changes (`import jitnet as caffe`).

    python examples/pycaffe/classification.py [DEPLOY.prototxt WEIGHTS.caffemodel [OUT_FOLDER]]

By default the LeNet files of ../shared/models/lenet_mnist next to the repository
(Caffe's examples/mnist/lenet.prototxt and lenet_iter_10000.caffemodel).
"""
import os
import sys

import numpy as np

import caffe

import digits_data

model_def, model_weights, out = digits_data.lenet_files(sys.argv[1:], "classification_")

caffe.set_mode_cpu()
net = caffe.Net(model_def,      # defines the structure of the model
                model_weights,  # contains the trained weights
                caffe.TEST)     # use test mode (e.g., don't perform dropout)

# an image file, as a user has one: a test digit saved as a PNG
_, _, test_x, test_y = digits_data.load(frames=True)
from PIL import Image  # noqa: E402
image_file = os.path.join(out, "digit.png")
Image.fromarray((test_x[3, 0] * 255).round().astype(np.uint8)).save(image_file)
labels = np.array([str(d) for d in range(10)])

# create transformer for the input called 'data'
transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
transformer.set_transpose("data", (2, 0, 1))  # move image channels to outermost dimension
# LeNet was trained on pixels scaled to [0, 1] (scale: 0.00390625), as load_image gives them:
# no raw scale, no mean

net.blobs["data"].reshape(50, 1, 28, 28)      # a batch of 50 images, as the notebook does
image = caffe.io.load_image(image_file, color=False)
transformed_image = transformer.preprocess("data", image)
net.blobs["data"].data[...] = transformed_image
output = net.forward()
output_prob = output["prob"][0]  # the output probability vector for the first image in the batch
print("predicted class is:", output_prob.argmax(), f"(the digit is a {int(test_y[3])})")
top_inds = output_prob.argsort()[::-1][:5]  # reverse sort and take five largest items
print("probabilities and labels:")
print([(round(float(p), 4), label) for p, label in zip(output_prob[top_inds], labels[top_inds])])

# for each layer, show the output shape
for layer_name, blob in net.blobs.items():
    print(layer_name + "\t" + str(blob.data.shape))
for layer_name, param in net.params.items():
    print(layer_name + "\t" + str(param[0].data.shape), str(param[1].data.shape))

import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def vis_square(data, path):
    """Take an array of shape (n, height, width) or (n, height, width, 3)
    and visualize each (height, width) thing in a grid of size approx. sqrt(n) by sqrt(n)"""
    data = (data - data.min()) / (data.max() - data.min())   # normalize data for display
    n = int(np.ceil(np.sqrt(data.shape[0])))                 # force the number of filters to be square
    padding = (((0, n ** 2 - data.shape[0]), (0, 1), (0, 1))  # add some space between filters
               + ((0, 0),) * (data.ndim - 3))                # don't pad the last dimension (if there is one)
    data = np.pad(data, padding, mode="constant", constant_values=1)  # pad with ones (white)
    # tile the filters into an image
    data = data.reshape((n, n) + data.shape[1:]).transpose((0, 2, 1, 3) + tuple(range(4, data.ndim + 1)))
    data = data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])
    plt.figure()
    plt.imshow(data, cmap="gray")
    plt.axis("off")
    plt.savefig(path)
    plt.close()


filters = net.params["conv1"][0].data          # the parameters are a list of [weights, biases]
vis_square(filters[:, 0], os.path.join(out, "conv1_filters.png"))
feat = net.blobs["conv1"].data[0]
vis_square(feat, os.path.join(out, "conv1_output.png"))
print("filters and first-layer outputs drawn in", out)
