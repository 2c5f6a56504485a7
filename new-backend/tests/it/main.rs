//! Integration tests of the new backend: the shared contract suite, and differential runs
//! against the legacy backend.

mod differential;
mod shutdown;

mod contract {
    shared::contract_tests!(new_backend::testing::start);
}
