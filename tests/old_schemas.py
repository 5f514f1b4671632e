"""The SQLite schemas that versions of the service made before it had migrations, verbatim,
for tests that open such files with today's code. Each file made then has no version table."""

# With callers and idempotency keys, before the request id was kept.
BEFORE_REQUEST_IDS = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    template TEXT NOT NULL,
    caller TEXT NOT NULL,
    request TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT,
    pending TEXT,
    refused TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_at, id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications(id),
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    smtp_code INTEGER,
    detail TEXT,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_notification ON attempts(notification_id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (caller, key)
);
"""


# The first release.
FIRST_RELEASE = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    template TEXT NOT NULL,
    caller TEXT NOT NULL,
    request_id TEXT,
    request TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT,
    pending TEXT,
    refused TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_at, id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications(id),
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    smtp_code INTEGER,
    detail TEXT,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_notification ON attempts(notification_id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys(created_at);
"""


# With the attempts counter, lease token and delivered list (fenced claims), the last schema
# written by hand.
FENCED_CLAIMS = """
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    template TEXT NOT NULL,
    caller TEXT NOT NULL,
    request_id TEXT,
    request TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT,
    pending TEXT,
    refused TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease INTEGER NOT NULL DEFAULT 0,
    delivered TEXT
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_due_at ON notifications(next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_at, id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES notifications(id),
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    smtp_code INTEGER,
    detail TEXT,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_notification ON attempts(notification_id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys(created_at);
"""
