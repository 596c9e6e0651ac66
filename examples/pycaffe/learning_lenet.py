"""Learning LeNet, as Caffe's notebook 01-learning-lenet does it: write the net with
NetSpec, step the solver from Python, look at the blobs, the parameters and their
gradients, and record the training loss and the test accuracy in numpy arrays while
training. The data are scikit-learn's handwritten digits framed as MNIST frames its
digits (upscaled to 20x20, centred in 28x28), written to HDF5.

Written for pycaffe; with jitnet only the import changes (`import jitnet as caffe`).

    python examples/pycaffe/learning_lenet.py [WORK_FOLDER [ITERATIONS]]

Writes WORK_FOLDER/lenet_digits.caffemodel (the trained weights) and
WORK_FOLDER/learning_curve.png.
"""
import os
import sys

import numpy as np

import caffe

import digits_data

L, P = caffe.layers, caffe.params          # pycaffe: from caffe import layers as L, params as P
caffe_pb2 = caffe.proto.caffe_pb2          # pycaffe: from caffe.proto import caffe_pb2

work, niter = digits_data.work_folder_and_iterations(sys.argv[1:], "learning_lenet_", 300)
caffe.set_mode_cpu()
caffe.set_random_seed(0)

train_x, train_y, test_x, test_y = digits_data.load(frames=True)
train_list = digits_data.write_hdf5(work, "train", train_x, train_y)
test_list = digits_data.write_hdf5(work, "test", test_x, test_y)


def lenet(hdf5, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=batch_size, source=hdf5, ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


train_net = os.path.join(work, "lenet_auto_train.prototxt")
test_net = os.path.join(work, "lenet_auto_test.prototxt")
with open(train_net, "w") as f:
    f.write(str(lenet(train_list, 64)))
with open(test_net, "w") as f:
    f.write(str(lenet(test_list, 120)))

s = caffe_pb2.SolverParameter()
s.train_net = train_net
s.test_net.append(test_net)
s.test_interval = 500                 # tests are run by hand below
s.test_iter.append(3)
s.base_lr = 0.01
s.momentum = 0.9
s.weight_decay = 5e-4
s.lr_policy = "inv"
s.gamma = 1e-4
s.power = 0.75
s.display = 0
s.max_iter = niter
s.snapshot = 0
s.snapshot_prefix = os.path.join(work, "lenet")
solver_path = os.path.join(work, "lenet_auto_solver.prototxt")
with open(solver_path, "w") as f:
    f.write(str(s))

solver = caffe.SGDSolver(solver_path)

# each output is (batch size, feature dim, spatial dim)
print([(k, v.data.shape) for k, v in solver.net.blobs.items()])
# just print the weight sizes (we'll omit the biases)
print([(k, v[0].data.shape) for k, v in solver.net.params.items()])

solver.net.forward()          # train net
solver.test_nets[0].forward()  # test net (there can be more than one)
print("train labels:", solver.net.blobs["label"].data[:8])
print("test labels:", solver.test_nets[0].blobs["label"].data[:8])

solver.step(1)
conv1_diff = solver.net.params["conv1"][0].diff
print("conv1 gradient after one step: shape", conv1_diff.shape, "mean |diff|", float(np.abs(conv1_diff).mean()))

test_interval = 25
train_loss = np.zeros(niter)
test_acc = np.zeros(int(np.ceil(niter / test_interval)))
output = np.zeros((niter, 8, 10))
test_batches = len(test_y) // 120
for it in range(niter):
    solver.step(1)  # SGD by Caffe
    train_loss[it] = solver.net.blobs["loss"].data
    # store the output on the first test batch
    solver.test_nets[0].forward(start="conv1")
    output[it] = solver.test_nets[0].blobs["score"].data[:8]
    if it % test_interval == 0:
        correct = 0
        for test_it in range(test_batches):
            solver.test_nets[0].forward()
            correct += int((solver.test_nets[0].blobs["score"].data.argmax(1)
                            == solver.test_nets[0].blobs["label"].data).sum())
        test_acc[it // test_interval] = correct / (test_batches * 120.0)
        print(f"Iteration {it}: train loss {train_loss[it]:.4f}, test accuracy {test_acc[it // test_interval]:.3f}")

print(f"Final: train loss {train_loss[-10:].mean():.4f}, test accuracy {test_acc[-1]:.3f}")
solver.net.save(os.path.join(work, "lenet_digits.caffemodel"))

import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_, ax1 = plt.subplots()
ax2 = ax1.twinx()
ax1.plot(np.arange(niter), train_loss)
ax2.plot(test_interval * np.arange(len(test_acc)), test_acc, "r")
ax1.set_xlabel("iteration")
ax1.set_ylabel("train loss")
ax2.set_ylabel(f"test accuracy: {test_acc[-1]:.2f}")
plt.savefig(os.path.join(work, "learning_curve.png"))
