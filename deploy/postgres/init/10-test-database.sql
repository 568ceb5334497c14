-- Runs once, when the PostgreSQL volume is first created: a separate database for the test profile.
CREATE DATABASE flakeguard_test OWNER flakeguard;
