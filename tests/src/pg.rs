//! The PostgreSQL test harness (issue 3): a throwaway server and a fresh database per test.
