"""Operations: metrics, health, the HTTP service and the embedded ops endpoints."""

from riskaudit.ops._metrics import CONTENT_TYPE, AuditMetrics

__all__ = ["CONTENT_TYPE", "AuditMetrics"]
