"""Distribution: the consistent-hash ring, regions and halos, the coordinator, and the shard backends
(in process, and Ray in :mod:`matcher.dist.ray_backend`, the only module that imports ``ray``)."""
