"""The store: SQLAlchemy models, the database, and the writes of a sync."""
