"""Face detection: decoders per model family, NMS.

Families: ``yunet``, ``ultraface`` (built in here), and any module that
registers with :func:`register_family` (e.g. ``tinierssd``, ``blazeface``, ``mtcnn``).
"""

from .base import Detection, FaceDetector, detector_class, families, register_family
from .nms import iou, nms

__all__ = ["Detection", "FaceDetector", "detector_class", "families", "register_family", "nms", "iou"]
