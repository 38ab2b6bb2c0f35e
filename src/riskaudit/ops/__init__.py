"""Operations: metrics, health, the HTTP service and the embedded ops endpoints."""

from riskaudit.ops._app import Service, create_app
from riskaudit.ops._auth import Principal, TokenChange, TokenStore, create_token, revoke_token
from riskaudit.ops._embedded import OpsServer, start_ops_server
from riskaudit.ops._metrics import (
    CONTENT_TYPE,
    AuditMetrics,
    ForwardCollector,
    register_process_metrics,
)
from riskaudit.ops._server import run_server, server_config

__all__ = [
    "CONTENT_TYPE",
    "AuditMetrics",
    "ForwardCollector",
    "OpsServer",
    "Principal",
    "Service",
    "TokenChange",
    "TokenStore",
    "create_app",
    "create_token",
    "register_process_metrics",
    "revoke_token",
    "run_server",
    "server_config",
    "start_ops_server",
]
