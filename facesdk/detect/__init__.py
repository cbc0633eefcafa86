"""Face detection: decoders per model family, NMS.

Families (``yunet``, ``ultraface``, ``ssd-detection-output``, ``tinierssd``, ``blazeface``,
``mtcnn`` built in, and any a plugin adds) are found through the
``facesdk_detector_families`` hook; see :func:`families` and :func:`detector_class`.
"""

from .base import Detection, FaceDetector, detector_class, families
from .nms import iou, nms

__all__ = ["Detection", "FaceDetector", "detector_class", "families", "nms", "iou"]
