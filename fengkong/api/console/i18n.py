"""The console's labels in English and Chinese: one small dict per language.

Templates never hard-code a label: they call ``t("key")``; a key missing from a
language falls back to English, and a key missing from both shows the key itself
(tests/test_console_i18n.py holds both dicts to the same keys). The language is
chosen with ``?lang=zh`` / ``?lang=en`` and kept in the session; the default is
Chinese, the language of the risk teams this is built for.
"""

from __future__ import annotations

from typing import Callable

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"

EN: dict[str, str] = {
    "app": "fengkong risk console", "overview": "Overview", "queue": "Queue", "rules": "Rules",
    "merchants": "Merchants", "lists": "Lists", "users": "Users", "logout": "Log out", "login": "Log in",
    "username": "Username", "password": "Password", "language": "中文", "role": "Role", "active": "Active",
    "login_failed": "Wrong username or password.", "signed_in_as": "Signed in as",
    "decisions_per_minute": "Decisions per minute by outcome (last hour, stored decisions)",
    "since_start": "since this worker started", "decisions": "Decisions", "degraded_share": "Degraded share",
    "p99_latency": "p99 latency", "top_rules": "Top rules", "rule": "Rule", "mode": "Mode", "fires": "Fires",
    "fire_rate": "Fire rate", "precision": "Precision (labels)", "outcome": "Outcome", "count": "Count",
    "case": "Case", "entity": "Entity", "priority": "Priority", "status": "Status", "age": "Age",
    "sla": "SLA", "assignee": "Assignee", "claim": "Claim", "resolve": "Resolve", "reopen": "Reopen",
    "fraud": "Fraud", "legit": "Legit", "needs_info": "Needs info", "note": "Note", "open_cases": "Open cases",
    "no_cases": "No open cases.", "cases_unavailable": "Cases are not available in this build.",
    "shortcuts": "Keys: j/k move, Enter open, c claim, f fraud, l legit, n needs info",
    "decision": "Decision", "score": "Score", "reasons": "Rules that fired", "shadow": "Shadow rules",
    "values_read": "Values read", "event": "Event", "features": "Features", "model_scores": "Model scores",
    "merchant_grade": "Merchant grade", "card_history": "The card's recent decisions", "risk": "Risk",
    "ruleset_version": "Rule-set version", "decided_at": "Decided at", "degraded": "Degraded",
    "live_version": "Live version", "loaded_at": "Loaded at", "reload_history": "Reload history",
    "who": "Who", "when": "When", "result": "Result", "reload": "Reload rules now", "dry_run": "Dry run",
    "dry_run_help": "A decided event (JSON) and/or features (JSON), optionally one rule file overlaid.",
    "features_json": "Features (JSON)", "event_json": "Event (JSON)", "file_name": "Rule file name",
    "file_text": "Rule file text", "run": "Run", "candidate": "Candidate", "live": "Live",
    "changed": "Changed", "failed_cases": "Failed cases", "reports": "Reports", "no_reports": "No reports yet.",
    "enforced": "Enforced", "then": "Then", "description": "Description", "tags": "Tags",
    "merchant_id": "Merchant id", "show": "Show", "grade": "Grade", "profile": "Profile",
    "grade_history": "Grade history", "volume_vs_baseline": "Volume against baseline",
    "no_merchant": "Enter a merchant id.", "reason": "Reason", "entries": "Entries", "add": "Add",
    "remove": "Remove", "list": "List", "kind": "Kind", "recent_changes": "Recent changes",
    "action": "Action", "add_user": "Add user", "disable": "Disable", "enable": "Enable",
    "new_password": "New password", "set_password": "Set password", "created": "Created",
    "last_login": "Last login", "never": "never", "forbidden": "Your role may not do this.",
    "error": "Error", "back": "Back", "saved": "Saved.", "time": "Time", "amount": "Amount", "id": "Id",
    "none": "none", "history": "History", "challenge_failed": "failed challenge", "disposition": "Disposition", "decisions_in_case": "Decisions",
    "view": "View", "reload_ok": "Reloaded.", "all_queues": "All queues", "st_open": "open",
    "st_claimed": "claimed", "st_resolved": "resolved", "st_all": "all",
    "p_volume_today": "volume today", "p_volume_hour": "volume this hour", "p_count_today": "payments today",
    "b_today": "today", "b_hour": "this hour", "b_7d": "7d median", "b_28d": "28d median",
    "no_baseline": "No baseline yet (under 7 days of history): its grade's limits decide, not a volume ratio.",
}

ZH: dict[str, str] = {
    "app": "风控控制台", "overview": "总览", "queue": "审核队列", "rules": "规则", "merchants": "商户",
    "lists": "名单", "users": "用户", "logout": "退出", "login": "登录", "username": "用户名", "password": "密码",
    "language": "English", "role": "角色", "active": "启用", "login_failed": "用户名或密码错误。",
    "signed_in_as": "当前用户", "decisions_per_minute": "每分钟决策数（按结果，最近一小时，已存储的决策）",
    "since_start": "自本进程启动", "decisions": "决策数", "degraded_share": "降级占比", "p99_latency": "p99 延迟",
    "top_rules": "命中最多的规则", "rule": "规则", "mode": "模式", "fires": "命中次数", "fire_rate": "命中率",
    "precision": "准确率（标签）", "outcome": "结果", "count": "数量", "case": "案件", "entity": "主体",
    "priority": "优先级", "status": "状态", "age": "时长", "sla": "SLA", "assignee": "处理人", "claim": "认领",
    "resolve": "结案", "reopen": "重新打开", "fraud": "欺诈", "legit": "正常", "needs_info": "需补充信息",
    "note": "备注", "open_cases": "待处理案件", "no_cases": "没有待处理的案件。",
    "cases_unavailable": "此版本未包含案件功能。",
    "shortcuts": "快捷键：j/k 移动，Enter 打开，c 认领，f 欺诈，l 正常，n 需补充信息",
    "decision": "决策", "score": "分数", "reasons": "命中的规则", "shadow": "影子规则", "values_read": "读取的值",
    "event": "事件", "features": "特征", "model_scores": "模型分数", "merchant_grade": "商户评级",
    "card_history": "该卡最近的决策", "risk": "风险", "ruleset_version": "规则集版本", "decided_at": "决策时间",
    "degraded": "降级", "live_version": "当前版本", "loaded_at": "加载时间", "reload_history": "重载历史",
    "who": "操作人", "when": "时间", "result": "结果", "reload": "立即重载规则", "dry_run": "试运行",
    "dry_run_help": "已决策的事件（JSON）和/或特征（JSON），可叠加一个规则文件。", "features_json": "特征（JSON）",
    "event_json": "事件（JSON）", "file_name": "规则文件名", "file_text": "规则文件内容", "run": "运行",
    "candidate": "候选", "live": "线上", "changed": "有变化", "failed_cases": "未通过的用例", "reports": "报告",
    "no_reports": "暂无报告。", "enforced": "生效", "then": "动作", "description": "说明", "tags": "标签",
    "merchant_id": "商户号", "show": "查看", "grade": "评级", "profile": "档案", "grade_history": "评级历史",
    "volume_vs_baseline": "交易量与基线对比", "no_merchant": "请输入商户号。", "reason": "原因", "entries": "条目",
    "add": "添加", "remove": "移除", "list": "名单", "kind": "类型", "recent_changes": "最近变更", "action": "操作",
    "add_user": "添加用户", "disable": "停用", "enable": "启用", "new_password": "新密码", "set_password": "设置密码",
    "created": "创建时间", "last_login": "最近登录", "never": "从未", "forbidden": "你的角色无权执行此操作。",
    "error": "错误", "back": "返回", "saved": "已保存。", "time": "时间", "amount": "金额", "id": "编号",
    "none": "无", "history": "历史", "challenge_failed": "验证未通过", "disposition": "结论", "decisions_in_case": "决策",
    "view": "查看", "reload_ok": "已重载。", "all_queues": "全部队列", "st_open": "待处理",
    "st_claimed": "已认领", "st_resolved": "已结案", "st_all": "全部",
    "p_volume_today": "今日交易额", "p_volume_hour": "本小时交易额", "p_count_today": "今日笔数",
    "b_today": "今日", "b_hour": "本小时", "b_7d": "7日中位数", "b_28d": "28日中位数",
    "no_baseline": "尚无基线（历史不足 7 天）：按评级限额判断，不看交易量倍数。",
}

LABELS: dict[str, dict[str, str]] = {"en": EN, "zh": ZH}


def translator(lang: str) -> Callable[[str], str]:
    """``t(key)``: the label in `lang`, else English, else the key."""
    table = LABELS.get(lang, LABELS[DEFAULT_LANGUAGE])

    def t(key: str) -> str:
        return table.get(key) or EN.get(key) or key

    return t
