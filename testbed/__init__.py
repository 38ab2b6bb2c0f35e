"""The real servers the tests and the benchmarks run against, started on loopback:
a 3-node NATS JetStream cluster (``testbed.nats``) and an S3 server with Object Lock
(Ceph's RADOS gateway, ``testbed.ceph``). Not part of the package: a clone's tests and
``bench/`` import it from the repository's root."""
