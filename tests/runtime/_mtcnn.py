"""MTCNN's three nets from the facenet-pytorch wheel, without torchvision (the loader lives in the package)."""

from bitladder.eval.mtcnn import mtcnn_module, mtcnn_net, weights_path, wheel_dir

__all__ = ["mtcnn_module", "mtcnn_net", "weights_path", "wheel_dir"]
