"""Labeling tools calling the service through their own interfaces (a CVAT
auto-annotation function; more to come). Each module talks HTTP to a running
service and never runs a model itself."""
