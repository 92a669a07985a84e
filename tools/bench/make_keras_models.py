"""Builds the Keras models the benchmark feeds to resnet-convert, with random weights.

Run with a Python that has tensorflow + tf_keras. Never imports torch (the two must not share a process).

  resnet50.h5  keras.applications ResNet50 (ResNet v1: the stride sits on the first 1x1 of a block)
  resnet18.h5  a torchvision-shaped ResNet-18 (basic blocks, explicit zero padding as PyTorch pads)
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tf_keras as keras  # noqa: E402
from tf_keras import layers  # noqa: E402


def resnet18():
    """torchvision's ResNet-18 layout, written in Keras layers (NHWC)."""
    eps = 1e-5
    x = inputs = keras.Input((224, 224, 3))
    x = layers.ZeroPadding2D(3)(x)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(epsilon=eps, name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    channels = 64
    for stage, width in enumerate([64, 128, 256, 512]):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"layer{stage + 1}.{block}"
            shortcut = x
            y = layers.ZeroPadding2D(1)(x)
            y = layers.Conv2D(width, 3, strides=stride, use_bias=False, name=f"{name}.conv1")(y)
            y = layers.BatchNormalization(epsilon=eps, name=f"{name}.bn1")(y)
            y = layers.ReLU()(y)
            y = layers.ZeroPadding2D(1)(y)
            y = layers.Conv2D(width, 3, use_bias=False, name=f"{name}.conv2")(y)
            y = layers.BatchNormalization(epsilon=eps, name=f"{name}.bn2")(y)
            if stride != 1 or width != channels:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}.downsample.0")(x)
                shortcut = layers.BatchNormalization(epsilon=eps, name=f"{name}.downsample.1")(shortcut)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
            channels = width
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(1000, name="fc")(x)
    return keras.Model(inputs, x, name="resnet18")


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(0)
    keras.applications.ResNet50(weights=None).save(os.path.join(out_dir, "resnet50.h5"))
    resnet18().save(os.path.join(out_dir, "resnet18.h5"))


if __name__ == "__main__":
    main(sys.argv[1])
