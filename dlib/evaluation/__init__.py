"""Evaluation: whole images at output stride 8 (MSC, flip, cached softmax), metrics (confusion, mIoU, trimap),
failure analysis (thin structures, per-object recall)."""
