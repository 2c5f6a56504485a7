//! Integration tests of the legacy backend: the shared contract suite, and shutdown.

mod shutdown;

mod contract {
    shared::contract_tests!(legacy_backend::testing::start);
}
