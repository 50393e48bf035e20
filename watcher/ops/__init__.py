"""What operators see and systemd talks to: the HTTP endpoint, metrics, sd_notify,
logs, and the crash-test failpoints."""
