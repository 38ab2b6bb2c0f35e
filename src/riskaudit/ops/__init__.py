"""Operations: metrics, health, the HTTP service, the embedded ops endpoints, the
pre-deployment checks and the housekeeping (backups, retention) beside a live log."""

from riskaudit.ops._app import Service, create_app
from riskaudit.ops._auth import Principal, TokenChange, TokenStore, create_token, revoke_token
from riskaudit.ops._embedded import OpsServer, start_ops_server
from riskaudit.ops._housekeeping import Housekeeper, open_backup, run_retention
from riskaudit.ops._metrics import (
    CONTENT_TYPE,
    AuditMetrics,
    ForwardCollector,
    register_process_metrics,
)
from riskaudit.ops._preflight import FAIL, SYMBOL, Check, CheckStatus, run_checks
from riskaudit.ops._server import run_server, server_config
from riskaudit.ops._views import ReplicationStatus

__all__ = [
    "CONTENT_TYPE",
    "FAIL",
    "SYMBOL",
    "AuditMetrics",
    "Check",
    "CheckStatus",
    "ForwardCollector",
    "Housekeeper",
    "OpsServer",
    "Principal",
    "ReplicationStatus",
    "Service",
    "TokenChange",
    "TokenStore",
    "create_app",
    "create_token",
    "open_backup",
    "register_process_metrics",
    "revoke_token",
    "run_checks",
    "run_retention",
    "run_server",
    "server_config",
    "start_ops_server",
]
