"""The PostgreSQL side of the state: the leader lease (`lease`) for high availability."""
