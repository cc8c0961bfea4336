//! Several cf-bridge processes on one PostgreSQL (issue 20, docs/SCALE-OUT.md). Under `postgres::`, so
//! scripts/test.sh reports them NOT RUN where PostgreSQL cannot be installed.

mod replicas;
