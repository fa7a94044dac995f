"""The prediction log's tests share the session's PostgreSQL and sink (tests/conftest.py:
`postgresql_url`, `sink`); each test writes ids and model versions of its own."""
