"""Recovery: emergency lines (stdout, container logs, spool) back into the chain."""

from riskaudit.recovery._find import Found, find_all, find_emergency_lines
from riskaudit.recovery._recover import RecoverReport, recover

__all__ = ["Found", "RecoverReport", "find_all", "find_emergency_lines", "recover"]
