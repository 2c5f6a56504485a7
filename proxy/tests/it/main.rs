//! Integration tests of the proxy against both backends, all in-process on loopback.

mod admin_auth;
mod browser;
mod compression;
mod cors;
mod edge;
mod failover;
mod fleet;
mod grafana;
mod harness;
mod hostile;
mod observability;
mod prometheus;
mod raw;
mod reload;
mod replicas;
mod rollout;
mod routing;
mod shadow;
mod slow_clients;
mod streaming;
mod tls;
mod upgrade;

pub async fn via_proxy_at_0(env: &shared::testing::TestEnv) -> shared::testing::TestServer {
    harness::contract_stack(env, 0.0).await
}

pub async fn via_proxy_at_100(env: &shared::testing::TestEnv) -> shared::testing::TestServer {
    harness::contract_stack(env, 100.0).await
}

/// The whole contract suite through the proxy, with every request on legacy.
mod contract_at_0 {
    shared::contract_tests!(crate::via_proxy_at_0, through_proxy);
}

/// The whole contract suite through the proxy, with every request on new.
mod contract_at_100 {
    shared::contract_tests!(crate::via_proxy_at_100, through_proxy);
}
