"""Vision layers: convolution and its relatives, pooling, local response normalization.

Kernels: ``kernels/{cpu,gpu}/im2col.py`` (the im2col family and the convolution drivers
built on it), ``kernels/{cpu,gpu}/pooling.py`` and ``kernels/{cpu,gpu}/lrn.py``.
"""


# =========================================================================== convolution family
# Convolution, Deconvolution and Im2col share _ConvolutionBase (Caffe's BaseConvolutionLayer).


# =========================================================================== pooling, SPP, LRN
