//! `pingora-floor`: Pingora 0.9's HTTP proxy with nothing of ours in it. One upstream, no
//! filters: no cookies, buckets, metrics, edge checks, forwarding headers or head deadline.
//! The same threads and work stealing as the shipped proxy, the upstream peer prepared once
//! and cloned per request as the proxy does.
//!
//! The benchmark runs it beside the proxy and nginx: what it costs per request is what the
//! engine costs, a floor no change to our filters can go below.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

#[derive(Parser)]
#[command(about = "Pingora's HTTP proxy with no filters, in front of one upstream")]
struct Args {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// The one upstream (plain HTTP/1.1).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads, as `[proxy] threads`.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Floor {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads.max(1),
        // No requests are in flight when the benchmark stops it.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        peer: HttpPeer::new(args.upstream, false, String::new()),
    };
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, floor);
    service.add_tcp(&args.listen.to_string());
    server.add_service(service);
    server.run_forever();
}
