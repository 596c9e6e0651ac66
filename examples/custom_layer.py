"""Write a layer of your own, check its gradient with jitnet.testing, and use it in a net.

A layer is a class with setup / reshape / forward / backward, registered under a type
name; prototxt files then use it like any built-in type. This one is y = x·|x| (a
"signed square"), a NeuronLayer that states only its two kernels, written with numpy
on the host; a layer meant for speed would call @njit / @cuda.jit kernels instead
(K = self.kernels(family) on the device it runs on). Run:

    python examples/custom_layer.py
"""
import numpy as np
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st

import jitnet
from jitnet.layer import NeuronLayer
from jitnet.proto import pb
from jitnet.testing import check_gradients
from jitnet.testing.strategies import arrays, shapes


@jitnet.register("SignedSquare")
class SignedSquare(NeuronLayer):
    """y = x·|x|;   ∂E/∂x = ∂E/∂y · 2|x|."""

    host_only = True       # numpy on the host; in GPU mode it still runs here, and says so
    kernel_family = None   # no kernel module: the hooks get K = None
    in_place = False       # backward needs x, which an in-place forward would overwrite

    def forward_kernel(self, K, x, y):
        y[:] = x * np.abs(x)

    def backward_kernel(self, K, x, y, dy, dx):
        dx[:] = dy * 2 * np.abs(x)


LAYER = pb.LayerParameter(name="sq", type="SignedSquare", bottom=["x"], top=["y"])


@settings(max_examples=25, deadline=None)
@given(st.data())
def check_signed_square(data):
    """Hypothesis draws shapes and values (kept away from the kink of |x| at 0)."""
    x = data.draw(shapes(max_dims=3).flatmap(lambda s: arrays(s, avoid=(0.0,))))
    check_gradients(LAYER, [x])


NET = """
name: "uses_a_custom_layer"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "sq" type: "SignedSquare" bottom: "x" top: "y" }
"""

if __name__ == "__main__":
    check_signed_square()
    print("gradient check of SignedSquare passed on 25 drawn shapes")
    net = jitnet.Net(text_format.Parse(NET, pb.NetParameter()), jitnet.TEST)
    out = net.forward(x=np.array([[-2.0, -0.5, 0.0], [0.5, 1.0, 3.0]]))
    print("y =", out["y"].tolist())
