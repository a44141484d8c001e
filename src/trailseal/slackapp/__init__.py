"""The /audit Slack app: requests, approvals and reports (DESIGN §2, issue 6)."""
