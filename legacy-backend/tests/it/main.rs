//! Integration tests of the legacy backend: the shared contract suite.

mod contract {
    shared::contract_tests!(legacy_backend::testing::start);
}
