"""Tests against real components: a 3-node NATS JetStream cluster, Ceph's S3 gateway
with Object Lock, headless Chromium, Prometheus, logrotate, the deployment linters,
a real HTTP server under load and signals, a panicking build of the core."""
