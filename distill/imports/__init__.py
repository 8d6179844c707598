"""Labels made elsewhere, read into COCO (Label Studio annotations: :mod:`.labelstudio`)."""
