"""Brewing logistic regression, as Caffe's notebook 02-brewing-logreg does it, on
scikit-learn's handwritten digits (jitnet's own first example, examples/digits/):
write the data to HDF5 from Python, write the net with NetSpec and the solver with
caffe_pb2, train, and score the test set.

Written for pycaffe; with jitnet only the import changes (`import jitnet as caffe`).

    python examples/pycaffe/brewing_logreg.py [WORK_FOLDER [ITERATIONS]]
"""
import os
import sys

import numpy as np

import caffe

import digits_data

L, P = caffe.layers, caffe.params          # pycaffe: from caffe import layers as L, params as P
caffe_pb2 = caffe.proto.caffe_pb2          # pycaffe: from caffe.proto import caffe_pb2

work, niter = digits_data.work_folder_and_iterations(sys.argv[1:], "brewing_logreg_", 1000)
caffe.set_mode_cpu()
caffe.set_random_seed(1)

# -- the data, written to HDF5 from Python ----------------------------------------------------
train_x, train_y, test_x, test_y = digits_data.load()
train_x, test_x = train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)
train_list = digits_data.write_hdf5(work, "train", train_x, train_y)
test_list = digits_data.write_hdf5(work, "test", test_x, test_y)
print(f"{len(train_y)} training and {len(test_y)} test digits of {train_x.shape[1]} pixels in {work}")


# -- the nets, written with NetSpec -------------------------------------------------------------
def logreg(hdf5, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=batch_size, source=hdf5, ntop=2)
    n.ip1 = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type="xavier"))
    n.accuracy = L.Accuracy(n.ip1, n.label)
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    return n.to_proto()


def nonlinear_net(hdf5, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=batch_size, source=hdf5, ntop=2)
    n.ip1 = L.InnerProduct(n.data, num_output=40, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.ip1, num_output=10, weight_filler=dict(type="xavier"))
    n.accuracy = L.Accuracy(n.ip2, n.label)
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def solver(train_net_path, test_net_path, prefix):
    s = caffe_pb2.SolverParameter()
    s.train_net = train_net_path
    s.test_net.append(test_net_path)
    s.test_interval = 200
    s.test_iter.append(36)                 # 36 batches of 10: the 360 test digits
    s.max_iter = niter
    s.base_lr = 0.1
    s.lr_policy = "step"
    s.gamma = 0.1
    s.stepsize = niter // 2
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.display = 200
    s.snapshot = niter
    s.snapshot_prefix = prefix
    s.solver_mode = caffe_pb2.SolverParameter.CPU
    return s


def train_and_score(name, make_net):
    train_net, test_net = os.path.join(work, f"{name}_train.prototxt"), os.path.join(work, f"{name}_test.prototxt")
    with open(train_net, "w") as f:
        f.write(str(make_net(train_list, 10)))
    with open(test_net, "w") as f:
        f.write(str(make_net(test_list, 10)))
    solver_path = os.path.join(work, f"{name}_solver.prototxt")
    with open(solver_path, "w") as f:
        f.write(str(solver(train_net, test_net, os.path.join(work, name))))
    s = caffe.get_solver(solver_path)
    s.solve()
    accuracy = 0.0
    test_iters = len(test_y) // 10
    for _ in range(test_iters):
        s.test_nets[0].forward()
        accuracy += float(s.test_nets[0].blobs["accuracy"].data)
    accuracy /= test_iters
    print(f"{name} accuracy: {accuracy:.3f}")
    return accuracy


logreg_accuracy = train_and_score("logreg", logreg)
nonlinear_accuracy = train_and_score("nonlinear", nonlinear_net)
print(f"Accuracy: logistic regression {logreg_accuracy:.3f}, one hidden layer {nonlinear_accuracy:.3f}")
