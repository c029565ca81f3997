"""The BLE side of the host: the wire format (protocol), links over bleak or bumble
(blelinks), the capture session (capture) and its files (steplog), exercise sessions over
a link (train_link)."""
