"""pycaffe's Classifier and Detector: a TEST-phase Net with a Transformer in front.

``Classifier(model, weights, image_dims=None, mean=None, input_scale=None,
raw_scale=None, channel_swap=None)``; ``predict(images, oversample=True)`` takes a list of
H x W x K images (as :func:`jitnet.io.load_image` gives them), resizes them to
``image_dims``, takes the ten crops of the input size (or the centre crop) and returns
the first output per image (averaged over the crops).

``Detector(model, weights, mean=None, input_scale=None, raw_scale=None,
channel_swap=None, context_pad=None)``; ``detect_windows([(image, [windows])])`` crops
each window (ymin, xmin, ymax, xmax), with ``context_pad`` pixels of context as R-CNN
does, warps it to the input size and returns one {window, prediction, filename} per
window.
"""
import numpy as np

from . import io as jio
from .common import TEST
from .errors import JitnetError
from .net import Net

__all__ = ["Classifier", "Detector"]


def _transformer(net, mean, input_scale, raw_scale, channel_swap):
    if not net.inputs:
        raise JitnetError(f"net '{net.name}' has no input blob (an Input layer) to feed images to")
    in_ = net.inputs[0]
    shape = net.blobs[in_].shape
    if len(shape) != 4:
        raise JitnetError(f"net '{net.name}': the input '{in_}' has shape {shape}; images need "
                          "an N x K x H x W input")
    transformer = jio.Transformer({in_: shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


def _predict(net, images):
    """The net's first output for each image (H x W x K), preprocessed by its transformer."""
    in_ = net.inputs[0]
    caffe_in = np.zeros((len(images),) + tuple(net.blobs[in_].shape[1:]), dtype=np.float32)
    for ix, image in enumerate(images):
        caffe_in[ix] = net.transformer.preprocess(in_, image)
    return net.forward_all(**{in_: caffe_in})[net.outputs[0]]


class Classifier(Net):
    """A Net for classifying images, as pycaffe's ``caffe.Classifier`` (see the module)."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = _transformer(self, mean, input_scale, raw_scale, channel_swap)
        in_ = self.inputs[0]
        self.crop_dims = np.array(self.blobs[in_].shape[2:])
        self.image_dims = np.array(self.crop_dims if image_dims is None or not len(image_dims)
                                   else image_dims)

    def predict(self, inputs, oversample=True):
        """The first output for each image of ``inputs`` (H x W x K arrays): with
        ``oversample`` the mean over its ten crops, else over its centre crop."""
        inputs = [np.asarray(image) for image in inputs]
        if not inputs:
            raise JitnetError("Classifier.predict: no images")
        for i, image in enumerate(inputs):
            if image.ndim != 3:
                raise JitnetError(f"Classifier.predict: image {i} has shape {image.shape}; images "
                                  "are H x W x K (jitnet.io.load_image gives them so)")
        image_dims = tuple(int(d) for d in self.image_dims)
        resized = np.zeros((len(inputs),) + image_dims + (inputs[0].shape[2],), dtype=np.float32)
        for ix, image in enumerate(inputs):
            resized[ix] = jio.resize_image(image, image_dims)
        if oversample:
            crops = jio.oversample(resized, self.crop_dims)
        else:
            center = np.array(image_dims) / 2.0
            crop = (np.tile(center, (1, 2))[0]
                    + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])).astype(int)
            crops = resized[:, crop[0]:crop[2], crop[1]:crop[3], :]
        predictions = _predict(self, crops)
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions


class Detector(Net):
    """A Net for classifying windows of images, as pycaffe's ``caffe.Detector`` (R-CNN)."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = _transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[{window, prediction, filename}] for ``[(image file or H x W x K array, [windows])]``,
        each window (ymin, xmin, ymax, xmax) in pixels."""
        window_inputs = []
        for image, windows in images_windows:
            pixels = jio.load_image(image) if isinstance(image, str) else np.asarray(image, np.float32)
            for window in windows:
                window_inputs.append(self.crop(pixels, window))
        if not window_inputs:
            return []
        predictions = _predict(self, window_inputs)
        detections, ix = [], 0
        for image, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix],
                                   "filename": image if isinstance(image, str) else None})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        raise JitnetError("Detector.detect_selective_search needs the selective search proposals "
                          "of pycaffe's selective_search_ijcv_with_python (MATLAB), which jitnet "
                          "does not ship; compute the windows and call detect_windows")

    def crop(self, im, window):
        """The window (ymin, xmin, ymax, xmax) of the image; with ``context_pad``, the window
        enlarged so that after warping to the input size ``context_pad`` pixels of context
        surround it, the part outside the image filled with the mean."""
        window = np.asarray(window, dtype=int)
        crop = im[window[0]:window[2], window[1]:window[3]]
        if not self.context_pad:
            return crop
        box = window.astype(float)
        crop_size = self.blobs[self.inputs[0]].shape[3]          # assumes a square input
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h, half_w = (box[2] - box[0] + 1) / 2.0, (box[3] - box[1] + 1) / 2.0
        center = (box[0] + half_h, box[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        full_h, full_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        scale_h, scale_w = crop_size / full_h, crop_size / full_w
        pad_y = int(round(max(0, -box[0]) * scale_h))
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise JitnetError(f"Detector.crop: the window {tuple(window)} lies outside the "
                              f"image of {im_h} x {im_w}")
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        box = box.astype(int)
        context_crop = jio.resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context_crop
        return crop

    def configure_crop(self, context_pad):
        """Set the crop size (the input's H x W x K) and the context padding; the mean for
        the padding is brought back to image space (before raw scale and channel swap)."""
        in_ = self.inputs[0]
        transpose = self.transformer.transpose[in_]
        inverse = np.argsort(transpose)
        self.crop_dims = np.array(self.blobs[in_].shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        channel_order = self.transformer.channel_swap.get(in_)
        raw_scale = self.transformer.raw_scale.get(in_)
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = mean.copy().transpose(inverse)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_order)]
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
