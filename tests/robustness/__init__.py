"""What a hostile or unlucky world does: hostile bodies, backpressure, a killed server, no file descriptors left,
recovery after a crash, storage (local and OSS) and the OSS test server."""
