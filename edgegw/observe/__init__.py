"""What operators see of the gateway: request metrics, the access log, log levels
(tracing is edgegw/tracing/; docs/operations.md)."""
