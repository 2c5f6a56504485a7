//! Integration tests of the legacy backend: the shared contract suite (on SQLite, and its
//! store cases on Redis), and shutdown.

mod shutdown;

mod contract {
    shared::contract_tests!(legacy_backend::testing::start);
}

/// The cases that decide with the stores again, on Redis.
mod contract_on_redis {
    shared::contract_on_redis_tests!(legacy_backend::testing::start);
}
