"""Milvus gallery store for facesdk (``Gallery.open("milvus:galleries.db")``); see :mod:`.store`."""
