"""dlib's file format, 5-point shape predictor and face chip, in numpy (dlib itself is never imported).

- :mod:`facesdk.dlib.fmt`: dlib's serialisation (``.dat``: varints, floats, matrices; the readers of
  the shape predictor and the ResNet converter).
- :mod:`facesdk.dlib.shape_predictor`: the regression-tree cascade (Kazemi & Sullivan 2014) of
  ``shape_predictor_5_face_landmarks.dat``.
- :mod:`facesdk.dlib.crop`: ``get_face_chip_details`` / ``extract_image_chip`` (150×150, padding 0.25)
  and the dlib aligners registered for the ``dlib150`` / ``dlib5`` templates.
"""
