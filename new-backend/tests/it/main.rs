//! Integration tests of the new backend: the shared contract suite (on SQLite, and its store
//! cases on Redis), differential runs against the legacy backend, and both backends on one
//! Redis.

mod differential;
mod on_redis;
mod shutdown;

mod contract {
    shared::contract_tests!(new_backend::testing::start);
}

/// The cases that decide with the stores again, on Redis.
mod contract_on_redis {
    shared::contract_on_redis_tests!(new_backend::testing::start);
}
